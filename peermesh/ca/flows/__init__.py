"""The threshold CA's flows, one per module, over one shared :class:`peermesh.ca.node.CaNode`."""
