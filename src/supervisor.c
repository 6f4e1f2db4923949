/* supervisor.c - placeholder */
