/* wtcache--1.1--1.2.sql */

\echo Use "ALTER EXTENSION wtcache UPDATE TO '1.2'" to load this file. \quit

-- 1.2: safe in a database shared by roles that do not trust each other.
