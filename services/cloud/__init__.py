"""Cloud node: the deep segment of the network behind a gRPC stream, computed by Triton."""
