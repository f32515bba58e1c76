/* wtcache--1.3--1.4.sql */

\echo Use "ALTER EXTENSION wtcache UPDATE TO '1.4'" to load this file. \quit

-- 1.4: see it, measure it, bound it (issue 20): delivery lag percentiles
-- and hit ratios, a live consistency audit, the progress of long work,
-- replica acknowledgements, Redis under memory pressure.

-- (each part adds its objects above this line, in its own section)
