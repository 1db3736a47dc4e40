"""Matrix → Teams bodies."""

from __future__ import annotations

import json

from msgraph.generated.models.body_type import BodyType

from bridge.core import NetworkID, RemoteChatID, RemoteMessageID
from bridge.core.events import MatrixEvent
from bridge.portal.models import Message, Portal
from bridge.teams.from_matrix import EXTERNAL, as_posted, body_html, chat_message, relayed
from bridge.teams.ids import NETWORK


def test_text_is_escaped_and_keeps_line_breaks() -> None:
    assert body_html("a <b>\nc", None) == "a &lt;b&gt;<br>c"


def test_html_loses_the_reply_fallback() -> None:
    html = "<mx-reply><blockquote>old</blockquote></mx-reply>new <em>text</em>"
    assert body_html("> old\n\nnew text", html) == "new <em>text</em>"


def _header(posted: str) -> str:
    """The part the relay account adds in front of the text (its first paragraph)."""
    return posted.split("</p>", 1)[0] + "</p>"


def test_relay_names_the_sender_safely() -> None:
    posted = relayed("Eve <script>", "@eve:evil.example", "hi")
    assert posted == (
        f"<p><b>{EXTERNAL}</b> · <b>@eve:evil.example</b> · “Eve &lt;script&gt;”</p>hi"
    )


def test_the_matrix_id_and_the_marker_are_always_shown() -> None:
    for name in ("Anna Schmit", "", "   ", "@anna:luxchat.lu"):
        header = _header(relayed(name, "@anna:luxchat.lu", "<p>hi</p>"))
        assert header.startswith(f"<p><b>{EXTERNAL}</b> · <b>@anna:luxchat.lu</b>")
    assert "“" not in _header(relayed("", "@anna:luxchat.lu", "x"))


def test_a_display_name_cannot_pass_as_internal_or_as_another_matrix_user() -> None:
    """Hostile: names copying a tenant user, the marker, the layout, a Matrix ID, or using
    markup, line breaks and bidi overrides stay one quoted name after the real Matrix ID."""
    mxid = "@eve:evil.example"
    for name in (
        "IT Security",
        "Adele Vance",
        EXTERNAL,
        f"Adele Vance</b> · <b>{EXTERNAL}",
        "Adele Vance\n\nIT Security: reset your password",
        "\u202eytiruceS TI\u202c",
        "Adele\u200b Vance",
        '<at id="0">Adele Vance</at>',
    ):
        header = _header(relayed(name, mxid, "<p>hi</p>"))
        assert header.startswith(f"<p><b>{EXTERNAL}</b> · <b>{mxid}</b> · “"), header
        assert header.count("<b>") == 2 and "<at" not in header and "\n" not in header
        assert not any(c in header for c in "\u202e\u202c\u200b")
    # A display name that looks like a Matrix ID is left out: only the real one is shown.
    assert "@adele:contoso" not in relayed("@adele:contoso.example", mxid, "hi")
    # A very long name is cut, so the text cannot scroll out of view behind it.
    assert len(_header(relayed("A" * 500, mxid, "hi"))) < 200


def test_reply_quotes_the_teams_message() -> None:
    target = Message(
        network=NetworkID("teams"),
        portal_id=RemoteChatID("19:x"),
        remote_id=RemoteMessageID("1700"),
        mxid="$e",
        room_id="!r",
        sender_id="a1b2",
    )
    msg = chat_message("<p>yes</p>", reply_to=target, reply_text="the question")
    assert msg.body is not None and msg.body.content_type == BodyType.Html
    assert msg.body.content == '<attachment id="1700"></attachment><p>yes</p>'
    (attachment,) = msg.attachments or []
    assert attachment.content_type == "messageReference" and attachment.id == "1700"
    reference = json.loads(attachment.content or "")
    assert reference["messagePreview"] == "the question"
    assert reference["messageSender"]["user"]["id"] == "a1b2"


def test_image_goes_as_hosted_content() -> None:
    msg = chat_message("", image=(b"\x89PNG", "image/png"))
    assert msg.body is not None and 'src="../hostedContents/1/$value"' in (msg.body.content or "")
    (hosted,) = msg.hosted_contents or []
    assert hosted.content_bytes == b"\x89PNG"
    assert hosted.additional_data["@microsoft.graph.temporaryId"] == "1"


def _event(*, relayed: bool) -> MatrixEvent:
    portal = Portal(NETWORK, RemoteChatID("19:chat@thread.v2"), mxid="!room:hub")
    name = "Pontis bridge" if relayed else "Bob <b>"
    return MatrixEvent(portal=portal, event_id="$e", sender="@x:hub", sender_name=name,
                       timestamp=0, relayed=relayed)  # fmt: skip


def test_the_relay_account_puts_the_senders_name_in_front_once() -> None:
    assert as_posted(_event(relayed=False), "hi", relay=True) == (
        f"<p><b>{EXTERNAL}</b> · <b>@x:hub</b> · “Bob &lt;b&gt;”</p>hi"
    )
    assert as_posted(_event(relayed=False), "hi", relay=False) == "hi"  # their own login


def test_the_cores_relay_mode_posts_the_same_marker_line() -> None:
    """A relay-level Matrix user named "IT Security" does not post as "<b>IT Security</b>: …":
    the line is the marker, their Matrix ID and their name, sanitised, on messages and edits,
    whichever account posts it; never the bot's name."""
    portal = Portal(NETWORK, RemoteChatID("19:chat@thread.v2"), mxid="!room:hub")
    for relay in (True, False):
        event = MatrixEvent(portal=portal, event_id="$e", sender="@bot:hub",
                            sender_name="Pontis bridge", timestamp=0, relayed=True,
                            relayed_sender="@eve:evil.example",
                            relayed_sender_name="IT\u202e\nSecurity")  # fmt: skip
        posted = as_posted(event, "<p>reset your password</p>", relay=relay)
        assert _header(posted) == (
            f"<p><b>{EXTERNAL}</b> · <b>@eve:evil.example</b> · “IT Security”</p>"
        )
        assert posted.endswith("<p>reset your password</p>") and "Pontis" not in posted
