"""Code written for the GPU and never yet run on one: used only when asked for.

* ``triton_model``: ``--impl triton``, the fused model whose recurrences run as the Triton
  kernels of ``triton_rnn`` on CUDA (rnnlab.models reaches it by one branch).
* ``cuda_graph``: ``--cuda-graph``, the training step captured once as a CUDA graph and
  replayed (the trainer reaches it by one branch).

Both are tested on the CPU (the kernels in Triton's interpreter, the graph step's
bookkeeping with the capture replaced); benchmarks/gpu_check.py is the script that checks
and times them on a GPU. Nothing outside this package depends on them.
"""
