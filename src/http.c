/* http.c - placeholder */
