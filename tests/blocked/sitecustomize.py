"""Make the SDKs named in $ALIGN_TRACK_BLOCK look not installed (import fails), and
keep the network guard of tests/netguard working."""
import os
import sys

for _name in filter(None, os.environ.get("ALIGN_TRACK_BLOCK", "").split(",")):
    sys.modules[_name] = None  # `import name` now raises ImportError

_guard = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netguard")
if os.environ.get("ALIGN_TRACK_NETGUARD"):
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "_netguard", os.path.join(_guard, "sitecustomize.py"))
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
