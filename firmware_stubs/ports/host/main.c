/* ports/host/main.c: the POSIX port of the firmware — the same protocol and neuron core as a
 * board, serving a pseudo-terminal (--pty, what the emulator and the tests use: the host talks to
 * it with pyserial exactly as to a USB serial board), stdin/stdout (--stdio) or an inherited file
 * descriptor (--fd N).
 *
 *   spikeloop-fw-host --pty [--reboot-after N]
 *     prints "SPIKELOOP_PTY <path>" on stdout, then serves the pty until stdin closes or
 *     SIGTERM/SIGINT arrives. --reboot-after N cold-restarts the firmware once (program lost,
 *     new boot id) after its N-th request frame: a board reset with the USB-serial link staying
 *     up, for the restart tests.
 *   --chip ID --sigma-q16 T,L,G,N   boot as non-ideal chip ID (uint32) with the sigma of threshold,
 *     leak, gain and membrane noise in Q16 (docs/fixed_point.md, "Non-ideal chips"); default: the
 *     build's sl_config.h values (the ideal chip). */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "sl_nonideal.h"
#include "sl_proto.h"

static sl_proto g_board; /* all firmware state: static, as on a board */
static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int write_all(void *user, const uint8_t *data, size_t n)
{
    int fd = *(const int *)user;
    while (n > 0) {
        ssize_t k = write(fd, data, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += k;
        n -= (size_t)k;
    }
    return 0;
}

static uint32_t new_boot_id(void)
{
    static uint32_t boots = 0;
    uint32_t t = (uint32_t)time(NULL), pid = (uint32_t)getpid();
    boots++;
    return (t * 2654435761u) ^ (pid << 16) ^ (boots * 40503u) ^ (uint32_t)clock();
}

static int make_raw(int fd)
{
    struct termios tio;
    if (tcgetattr(fd, &tio) != 0)
        return -1;
    /* cfmakeraw() spelled out in POSIX terms (cfmakeraw itself is a BSD extension). */
    tio.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    tio.c_oflag &= ~(tcflag_t)OPOST;
    tio.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    tio.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    tio.c_cflag |= CS8;
    tio.c_cc[VMIN] = 1;
    tio.c_cc[VTIME] = 0;
    return tcsetattr(fd, TCSANOW, &tio);
}

static int open_pty(int *slave_fd)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    const char *name;
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0 || (name = ptsname(m)) == NULL) {
        perror("spikeloop-fw-host: cannot create a pty");
        return -1;
    }
    /* Keep our own slave descriptor open: the link then survives the host closing and reopening
     * the port (as a USB serial board would), and the slave starts out in raw mode, so nothing
     * the host sends before configuring the port is echoed back. */
    *slave_fd = open(name, O_RDWR | O_NOCTTY);
    if (*slave_fd < 0 || make_raw(*slave_fd) != 0) {
        perror("spikeloop-fw-host: cannot configure the pty");
        return -1;
    }
    printf("SPIKELOOP_PTY %s\n", name);
    fflush(stdout);
    return m;
}

static void usage(void)
{
    fprintf(stderr, "usage: spikeloop-fw-host (--pty | --stdio | --fd N) [--reboot-after N] "
                    "[--chip ID] [--sigma-q16 T,L,G,N]\n");
}

/* A decimal uint32 (all of text); 0 on success. */
static int parse_u32(const char *text, char **end_out, uint32_t *v)
{
    char *end;
    unsigned long long x;
    if (*text < '0' || *text > '9')
        return 1;
    errno = 0;
    x = strtoull(text, &end, 10);
    if (errno != 0 || x > 0xFFFFFFFFull)
        return 1;
    *v = (uint32_t)x;
    if (end_out)
        *end_out = end;
    else if (*end != '\0')
        return 1;
    return 0;
}

/* "T,L,G,N": four decimal sigma_q16 values; 0 on success. */
static int parse_sigmas(const char *text, uint32_t sigma[SL_NI_COUNT])
{
    int k;
    char *end = NULL;
    for (k = 0; k < SL_NI_COUNT; k++) {
        if (parse_u32(text, &end, &sigma[k]) != 0)
            return 1;
        if (*end != (k + 1 < SL_NI_COUNT ? ',' : '\0'))
            return 1;
        text = end + 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int in_fd = -1, out_fd = -1, slave_fd = -1, watch_stdin = 0, i;
    long reboot_after = 0;
    uint32_t chip = sl_nonideal_chip()->chip, sigma[SL_NI_COUNT];
    sl_ostream out;
    uint8_t buf[4096];

    memcpy(sigma, sl_nonideal_chip()->sigma_q16, sizeof sigma);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--chip") == 0 && i + 1 < argc) {
            if (parse_u32(argv[++i], NULL, &chip) != 0) {
                fprintf(stderr, "spikeloop-fw-host: --chip takes a decimal uint32, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--sigma-q16") == 0 && i + 1 < argc) {
            if (parse_sigmas(argv[++i], sigma) != 0) {
                fprintf(stderr, "spikeloop-fw-host: --sigma-q16 takes four decimal integers T,L,G,N, "
                                "got '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--pty") == 0) {
            in_fd = out_fd = open_pty(&slave_fd);
            if (in_fd < 0)
                return 1;
            watch_stdin = 1;
        } else if (strcmp(argv[i], "--stdio") == 0) {
            in_fd = 0;
            out_fd = 1;
        } else if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc) {
            in_fd = out_fd = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--reboot-after") == 0 && i + 1 < argc) {
            reboot_after = atol(argv[++i]);
        } else {
            usage();
            return 2;
        }
    }
    if (in_fd < 0) {
        usage();
        return 2;
    }
#if !SL_NONIDEAL
    if (sigma[0] | sigma[1] | sigma[2] | sigma[3]) {
        fprintf(stderr, "spikeloop-fw-host: built with SL_NONIDEAL=0: --sigma-q16 must be 0,0,0,0\n");
        return 2;
    }
#endif
    if (sl_nonideal_configure(chip, sigma) != 0) {
        fprintf(stderr, "spikeloop-fw-host: --sigma-q16 values must be in 0..65536 (sigma 0..1)\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    out.write = write_all;
    out.user = &out_fd;
    sl_proto_init(&g_board, out, new_boot_id());

    while (!g_stop) {
        struct pollfd fds[2];
        nfds_t nfds = 1;
        ssize_t n;
        fds[0].fd = in_fd;
        fds[0].events = POLLIN;
        if (watch_stdin) {
            fds[1].fd = 0;
            fds[1].events = POLLIN;
            nfds = 2;
        }
        if (poll(fds, nfds, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("spikeloop-fw-host: poll");
            return 1;
        }
        if (watch_stdin && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            n = read(0, buf, sizeof buf);
            if (n <= 0)
                break; /* the parent closed our stdin: shut down */
        }
        if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        n = read(in_fd, buf, sizeof buf);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0 && errno == EIO && slave_fd >= 0) {
            /* No host has the pty open (cannot happen while we hold the slave, but never spin). */
            struct timespec pause_ts = {0, 1000000L};
            nanosleep(&pause_ts, NULL);
            continue;
        }
        if (n <= 0)
            break;
        if (reboot_after > 0) {
            ssize_t k;
            for (k = 0; k < n; k++) {
                if (sl_proto_feed(&g_board, buf + k, 1) != SL_OK)
                    return 1;
                if (g_board.requests >= (uint32_t)reboot_after) {
                    fprintf(stderr, "spikeloop-fw-host: simulated board restart\n");
                    sl_proto_init(&g_board, out, new_boot_id());
                    reboot_after = 0; /* once */
                    if (k + 1 < n && sl_proto_feed(&g_board, buf + k + 1, (size_t)(n - k - 1)) != SL_OK)
                        return 1;
                    break;
                }
            }
        } else if (sl_proto_feed(&g_board, buf, (size_t)n) != SL_OK) {
            fprintf(stderr, "spikeloop-fw-host: output failed: %s\n", strerror(errno));
            return 1;
        }
    }
    if (slave_fd >= 0)
        close(slave_fd);
    return 0;
}
