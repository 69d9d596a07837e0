"""Benchmarks, all in this package: each ``bench/<name>.py`` runs as ``python -m bench.<name>``,
prints a table and writes its results as JSON with ``--json FILE``.

``attention_scaling`` (``make bench``: dense / sparse / cached attention against the number of
frames), ``localize`` (= ``reloc-vggt bench localize``: a posed scene's db split as the map, every
query localized and scored by ``reloc_vggt_ros.eval.metrics``), ``node_rate`` (node throughput
over loopback DDS), ``store`` (keyframe database operations), ``geometric_ab`` and
``geometric_cpu_time`` (geometric backend variants and per-query CPU time), ``engines`` and
``vggt_1b_export`` (exported model engines). ``commands`` registers ``reloc-vggt bench``.
"""
