/*
 * A stand-in for Windows' bcryptprimitives.dll, for running medic.exe
 * under Wine only. Rust's standard library takes its randomness from
 * ProcessPrng, which Debian's Wine 8.0 lacks (medic.exe would exit at
 * once); this one answers it with RtlGenRandom. Never shipped: Windows
 * has the real one.
 */
#include <windows.h>
#include <ntsecapi.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk)) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
