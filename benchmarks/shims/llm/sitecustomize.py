"""Lets `llm -m SmolLM2` run on CPUs whose llama.cpp AMX kernels crash (see gptcli/engines/local.py).

Installed only for the benchmark's `llm` runs (PYTHONPATH), it applies the same workaround gptcli
applies to itself, at the moment `llama_cpp.llama_cpp` is imported, so llm's start-up is not slowed.
With ``BENCH_THREADS`` set it also gives llm's model that many threads (llama-cpp-python's default
is half the logical CPUs), so both tools run with the same threads.
"""

import importlib.abc
import importlib.machinery
import os
import sys


class _PatchOnImport(importlib.abc.MetaPathFinder):
    patches = {"llama_cpp.llama_cpp", "llama_cpp.llama"}

    def find_spec(self, name, path, target=None):
        if name not in self.patches:
            return None
        self.patches.discard(name)
        if not self.patches:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module
        patch = _no_extra_buffers if name == "llama_cpp.llama_cpp" else _threads

        def exec_module(module):
            original(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _no_extra_buffers(module):
    defaults = module.llama_model_default_params

    def model_params():
        params = defaults()
        params.use_extra_bufts = False
        return params

    module.llama_model_default_params = model_params


def _threads(module):
    threads = int(os.environ.get("BENCH_THREADS") or 0)
    if not threads:
        return
    init = module.Llama.__init__

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("n_threads", threads)
        kwargs.setdefault("n_threads_batch", threads)
        init(self, *args, **kwargs)

    module.Llama.__init__ = __init__


sys.meta_path.insert(0, _PatchOnImport())
