/* agent.c - placeholder */
