/* store.c - placeholder */
