/*
 * supervisor.h - the astromesh-cloudd supervisor process.
 */
#ifndef AM_SUPERVISOR_H
#define AM_SUPERVISOR_H

/* Run the daemon with the config at path until SIGTERM/SIGINT. Returns the
 * process exit status (0 after a clean stop, 1 when start-up failed). */
int supervisor_main(const char *config_path);

#endif
