"""Communication: the codecs that compress a reply's model update (``comm.compressor``,
one file each in :mod:`fedsim.comm.codecs`), how a reply's update is encoded on the
client and decoded on the server (:mod:`fedsim.comm.update`: d_k = w_k - w, with error
feedback kept in the client-state store) and the server's decoder, an extension of the
strategy's round that acts on the replies before anything else sees them
(:mod:`fedsim.comm.server`). The bytes a run records are those of the encoded payload.
"""
