/*
 * LD_PRELOAD shim for the SyncEvolution 2.0.0 command-line client on Debian 12.
 *
 * Debian's libsyncevolution.so.0 sets CURLOPT_WRITEFUNCTION and CURLOPT_READFUNCTION in
 * SyncEvo::CurlTransportAgent::CurlTransportAgent() without loading the callback address into
 * the third argument register, so libcurl receives garbage (usually NULL) and falls back to
 * fread()/fwrite() on the C++ object: the client crashes on its first POST.
 *
 * CURLOPT_WRITEDATA / CURLOPT_READDATA are set correctly (to the agent's `this`), and the
 * member functions `size_t writeData(void *, size_t)` / `size_t readData(void *, size_t)`
 * are exported. This shim interposes curl_easy_setopt(): when one of the two callback options
 * comes from libsyncevolution, it installs a local callback that forwards to the member
 * function, whatever the caller passed. Every other call goes straight to libcurl.
 *
 * Build: cc -O2 -shared -fPIC -o libcurlfix.so curlfix.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef void CURL;
typedef int CURLcode;
typedef int CURLoption;

/* Option numbers of the libcurl ABI (curl.h: CURLOPTTYPE_* base + index). */
enum {
    OPT_TYPE_LONG = 0,
    OPT_TYPE_POINTER = 10000,
    OPT_TYPE_FUNCTION = 20000,
    OPT_TYPE_OFF_T = 30000,
    OPT_TYPE_BLOB = 40000,
    OPT_WRITEFUNCTION = OPT_TYPE_FUNCTION + 11,
    OPT_READFUNCTION = OPT_TYPE_FUNCTION + 12,
};

typedef CURLcode (*setopt_fn)(CURL *, CURLoption, ...);
typedef size_t (*member_io_fn)(void *self, void *buffer, size_t size);

static setopt_fn real_setopt;
static member_io_fn agent_write_data; /* SyncEvo::CurlTransportAgent::writeData(void*, unsigned long) */
static member_io_fn agent_read_data;  /* SyncEvo::CurlTransportAgent::readData(void*, unsigned long) */

static size_t write_trampoline(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    return agent_write_data(userdata, ptr, size * nmemb);
}

static size_t read_trampoline(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    return agent_read_data(userdata, ptr, size * nmemb);
}

/* True when the code at `addr` belongs to libsyncevolution. */
static int from_libsyncevolution(const void *addr)
{
    Dl_info info;
    if (!dladdr(addr, &info) || !info.dli_fname)
        return 0;
    return strstr(info.dli_fname, "libsyncevolution") != NULL;
}

static void resolve_members(void)
{
    if (!agent_write_data)
        agent_write_data = (member_io_fn)dlsym(RTLD_DEFAULT, "_ZN7SyncEvo18CurlTransportAgent9writeDataEPvm");
    if (!agent_read_data)
        agent_read_data = (member_io_fn)dlsym(RTLD_DEFAULT, "_ZN7SyncEvo18CurlTransportAgent8readDataEPvm");
}

__attribute__((visibility("default"))) CURLcode curl_easy_setopt(CURL *handle, CURLoption option, ...)
{
    const void *caller = __builtin_return_address(0);
    va_list ap;

    if (!real_setopt)
        real_setopt = (setopt_fn)dlsym(RTLD_NEXT, "curl_easy_setopt");

    if ((option == OPT_WRITEFUNCTION || option == OPT_READFUNCTION) && from_libsyncevolution(caller)) {
        resolve_members();
        if (option == OPT_WRITEFUNCTION && agent_write_data)
            return real_setopt(handle, option, write_trampoline);
        if (option == OPT_READFUNCTION && agent_read_data)
            return real_setopt(handle, option, read_trampoline);
    }

    /* Pass the single variadic argument on with its ABI type. */
    va_start(ap, option);
    CURLcode rc;
    if (option < OPT_TYPE_POINTER) {
        long v = va_arg(ap, long);
        rc = real_setopt(handle, option, v);
    } else if (option >= OPT_TYPE_OFF_T && option < OPT_TYPE_BLOB) {
        int64_t v = va_arg(ap, int64_t);
        rc = real_setopt(handle, option, v);
    } else {
        void *v = va_arg(ap, void *);
        rc = real_setopt(handle, option, v);
    }
    va_end(ap);
    return rc;
}
