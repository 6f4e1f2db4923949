/* worker.c - placeholder */
