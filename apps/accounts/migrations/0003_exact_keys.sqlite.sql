-- Usernames and emails are compared exactly once folded in Python: "josé" is not "jose".
-- SQLite already compares username_key byte for byte and does not enforce VARCHAR lengths;
-- email keeps NOCASE, which folds ASCII only, as Python has already done.
-- Nothing to change here; a statement that returns no rows (a SELECT would be printed).
DROP TABLE IF EXISTS _no_such_table;
