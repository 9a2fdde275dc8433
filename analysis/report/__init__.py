"""report: tidy tables and derived numbers from what was captured and scored: one text's analysis, spikes, word
classes, comparisons, the deep dive's reports."""
