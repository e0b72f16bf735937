"""Lets `llm -m SmolLM2` run on CPUs whose llama.cpp AMX kernels crash (see gptcli/engines/local.py).

Installed only for the benchmark's `llm` runs (PYTHONPATH), it applies the same workaround gptcli
applies to itself, at the moment `llama_cpp.llama_cpp` is imported, so llm's start-up is not slowed.
"""

import importlib.abc
import importlib.machinery
import sys


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "llama_cpp.llama_cpp":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            defaults = module.llama_model_default_params

            def model_params():
                params = defaults()
                params.use_extra_bufts = False
                return params

            module.llama_model_default_params = model_params

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchOnImport())
