/* account.c - placeholder */
