"""The one-command demo of the hub: ``python -m demo`` (``./scripts/demo.sh`` on a fresh machine).

A developer tool, not part of the product: it runs the real servers of the end-to-end test
harness (``tests/e2e``: Synapse, Prosody, Postfix and Dovecot, the Graph emulator) and the real
bridge on loopback, seeds a conversation on each network and, with ``--tour``, shows messages
crossing the hub with the latency of each hop. It lives outside ``bridge`` so that the wheel
never carries test code; it imports the harness instead of copying it.
"""
