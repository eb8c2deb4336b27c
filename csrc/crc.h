/* crc.h: CRC-32/ISO-HDLC (the CRC of zlib, gzip and PNG), the checksum of the .dnnz container
 * (spec/dnnz-format.md §9). Same results as zlib's crc32(); faster where the CPU has carry-less
 * multiplication (x86-64 PCLMULQDQ), which the container uses to verify sections at memory speed.
 */
#ifndef DNNZ_CRC_H
#define DNNZ_CRC_H

#include "common.h"

/* cffi:begin */
/* Continue a CRC-32 over n bytes: crc is the value returned for the data before (0 to start),
 * exactly like zlib's crc32(crc, data, n). data may be unaligned; n may be 0 (data then unused). */
uint32_t dnnz_crc_update(uint32_t crc, const uint8_t *data, size_t n);
/* The same CRC by the portable table loop only (the reference the tests compare paths with). */
uint32_t dnnz_crc_update_portable(uint32_t crc, const uint8_t *data, size_t n);
/* 1 when dnnz_crc_update uses the carry-less multiplication path on this CPU, else 0. */
int dnnz_crc_accelerated(void);
/* cffi:end */

#endif /* DNNZ_CRC_H */
