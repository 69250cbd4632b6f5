"""The fence providers: the I/O that proves a node off (BMCs, cloud APIs, fence agents).

Below the controller, beside `kube` (it never talks to the API server: the controller reads
the Secret and the Node and hands the provider a `Target` and `Credentials`). The pure part
(which provider, its settings, what is fenced, a fence agent's options) is
`noderecover.core.fencing`.
"""
