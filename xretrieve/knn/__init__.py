"""Exact k-nearest-neighbour search by inner product, both ways (``exact.knn_both_ways``): FAISS on
the CPU; on a GPU the chunk-maxima engine (``chunk_search``: fp16 products reduced to maxima
over chunks of rows by ``chunk_maxima``'s torch or Triton reductions, re-scored in fp32 and
proven exact with the error bound of ``precision``), reading in-memory or memory-mapped
matrices block by block (``xretrieve.core.row_blocks``)."""
