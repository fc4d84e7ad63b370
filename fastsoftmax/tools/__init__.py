"""The measuring harness, above the public API (nothing below imports it):

* ``timing`` -- round-robin timing of callables, medians and paired ratios;
* ``bench``  -- the benchmark engine: cases and contenders from the op registry, peers;
* ``tune``   -- ``fastsoftmax tune``: measure each op's size classes, write a dispatch table;
* ``report`` -- tables, Markdown, summaries and the plot of a benchmark run;
* ``cli``    -- the ``fastsoftmax`` command.
"""
