"""Figures drawn from results DataFrames (never from the engine). ``style`` holds the one palette and the
layout helpers; ``runs``, ``facets``, ``schedules``, ``lrfind``, ``init`` and ``amp`` draw."""
