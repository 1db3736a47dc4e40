"""What the demo prints once everything runs: how to log in with a Matrix, an XMPP and a mail
client, and where the seeded conversations are. Every value is read from the running servers."""

from __future__ import annotations

from demo.loopback_mail import LoopbackMail
from demo.seed import (
    DEMO_PASSWORD,
    MAIL_PASSWORD,
    MAIL_PERSON,
    TEAMS_COLLEAGUE,
    XMPP_PASSWORD,
    Conversations,
    xmpp_jid_of,
)
from demo.stack import Stack


def _mailbox(stack: Stack) -> str:
    assert stack.mail is not None
    if isinstance(stack.mail, LoopbackMail):
        where = stack.mail.maildir(MAIL_PERSON)
        return f"   mailbox          {where} (Maildir; no IMAP without Dovecot)"
    return f"   IMAP             127.0.0.1 port {stack.mail.imap_port}"


def banner(stack: Stack, talk: Conversations) -> str:
    assert stack.synapse and stack.prosody and stack.mail and stack.graph
    alex = stack.graph.user(TEAMS_COLLEAGUE)
    return f"""
================================================================================
 Pontis demo is running. Everything listens on 127.0.0.1 only.

 Matrix (Element Desktop, or any Matrix client)
   homeserver URL   {stack.synapse.base_url}
   user / password  {talk.demo.mxid}  /  {DEMO_PASSWORD}   (log in as "demo")
   rooms            a DM with Anna (XMPP), a DM with Bob (mail), "Project Aurora" (Teams)
   Rooms are end-to-end encrypted; messages sent before your client logged in were shared
   with the demo's own device only, so new messages are the ones your client can read.

 XMPP (Gajim, Dino, Conversations...; allow plain-text login without TLS)
   JID / password   {talk.anna.jid}  /  {XMPP_PASSWORD}
   server / port    127.0.0.1  /  {stack.prosody.c2s_port}
   write to         {xmpp_jid_of(talk.demo.mxid)}   (the demo user in Matrix)

 Mail (Thunderbird...; no TLS, plain password)
   user / password  {MAIL_PERSON}  /  {MAIL_PASSWORD}
{_mailbox(stack)}
   SMTP             127.0.0.1 port {stack.mail.smtp_port} (no authentication, loopback only)
   write to         {talk.mail_portal}   (the DM with the demo user)

 Teams (the Graph emulator; the demo user is logged in as Adele Vance)
   Graph API        {stack.graph.graph_url}
   Alex Wilber      {alex["userPrincipalName"]}  /  {TEAMS_COLLEAGUE}-pw
   post as Alex     curl -X POST {stack.graph.base}/_emulator/chats/{talk.teams_chat}/messages \\
                      -H 'Content-Type: application/json' \\
                      -d '{{"from": "{alex["id"]}", "content": "Hi from Teams"}}'

 Logs: {stack.workdir}/bridge.log, {stack.workdir}/synapse/homeserver.log
 Press Ctrl-C to stop everything.
================================================================================
"""
