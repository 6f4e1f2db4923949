/* routes.c - placeholder */
