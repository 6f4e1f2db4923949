/* wizard.c - placeholder */
