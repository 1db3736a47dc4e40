"""The email connector: portal rooms get mail addresses; mail senders become ghosts.

The bridge is not a mail server. The agency's MTA (Postfix) receives mail from the internet,
checks SPF/DKIM/DMARC and hands mail for the bridge's domain over LMTP; outgoing mail goes to
the same MTA as a relay. ``protocol/`` holds the mail-only building blocks (parsing, composing,
Authentication-Results, quote stripping); it imports nothing from the bridge.
"""
