/* api-request SOCKET METHOD PATH [BODY]: one HTTP/1.1 request to axvm's control socket
   (--api-socket), for hosts without curl (the rigs' busybox userland). Prints the answer's
   status line and body; exits 0 for a 2xx status, 1 for another, 2 if no answer came. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: api-request SOCKET METHOD PATH [BODY]\n");
        return 2;
    }
    const char *body = argc == 5 ? argv[4] : "";
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(argv[1]) >= sizeof a.sun_path) { fprintf(stderr, "api-request: socket path too long\n"); return 2; }
    strcpy(a.sun_path, argv[1]);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("api-request: connect"); return 2; }
    char req[8192];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %zu\r\n\r\n%s",
                     argv[2], argv[3], strlen(body), body);
    if (n < 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) { perror("api-request: write"); return 2; }
    static char resp[65536];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof resp - 1 && (r = read(fd, resp + got, sizeof resp - 1 - got)) > 0) got += (size_t)r;
    resp[got] = 0;
    close(fd);
    int status = 0;
    if (sscanf(resp, "HTTP/1.1 %d", &status) != 1) { fprintf(stderr, "api-request: no answer\n"); return 2; }
    char *eol = strstr(resp, "\r\n"), *sep = strstr(resp, "\r\n\r\n");
    printf("%.*s\n%s", eol ? (int)(eol - resp) : 0, resp, sep ? sep + 4 : "");
    return status >= 200 && status < 300 ? 0 : 1;
}
