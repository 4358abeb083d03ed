"""Hot loops, compiled with Cython where a C compiler was there at install time."""
