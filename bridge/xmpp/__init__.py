"""The XMPP connector: a XEP-0114 component bridging MUCs and 1:1 chats to Matrix.

``protocol/`` holds the XMPP-only building blocks (JID escaping, message styling); it imports
nothing from the bridge so it can be tested, and reasoned about, on its own.
"""
