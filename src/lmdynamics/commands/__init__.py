"""One module per ``lmdynamics`` verb: its parser and a ``main(argv) -> int`` that calls library functions.

Every verb parses the same way (``lmdynamics.arguments``): jsonargparse, ``--config FILE.yaml``, options with
underscores (the hyphenated spelling accepted too), bad input as one line ``error: ...`` and exit status 2. A
verb's module imports only what parsing needs at its top (no torch, lightning or transformers for the verbs that
do not train): ``--help`` and a typo answer at once; the work's imports happen inside ``main``.
"""
