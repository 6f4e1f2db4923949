/* registry.c - placeholder */
