"""Transparent capture: mesh names, virtual IPs, and the nftables rules that steer apps.

- :mod:`.vips` -- a stable virtual IP per service name (sans-IO).
- :mod:`.dnsanswer` -- the mesh DNS decision: answer a mesh name or forward (sans-IO).
- :mod:`.dnsserver` -- the trio UDP shell around it, forwarding to the host's resolvers.
- :mod:`.rules` -- the nftables table ``capture install`` writes (text, sans-IO).
- :mod:`.nft` -- running ``nft`` to install, remove and inspect that table.
"""
