/* conv.h: grouped (and depthwise) products of an encoded weight in one call.
 *
 * A grouped convolution, after im2col, is G independent products: group g's output channels
 * (rows g*per_out .. (g+1)*per_out - 1 of the (G*per_out, per_in) weight matrix) times group g's
 * patch matrix. dnnz_conv_grouped runs all of them from the encoded weight without re-encoding:
 *  - groups with few output channels (per_out < DNNZ_CONV_SMALL_OUT: depthwise and narrow groups)
 *    are decoded a block of groups at a time into one bounded buffer (at most DNNZ_CONV_WBUF
 *    floats) and multiplied there, the groups of a block split across the thread pool;
 *  - wider groups run the encoding's own matmul kernel on the group's rows (rows.h views).
 * Temporary memory: the DNNZ_CONV_WBUF-float buffer, whatever the layer size.
 */
#ifndef DNNZ_CONV_H
#define DNNZ_CONV_H

#include "common.h"
#include "rows.h"

/* cffi:begin */
/* y[g, i, :] = W_g @ cols[g, i, :] for g < groups, i < n: cols is (groups, n, per_in) and y is
 * (groups, n, per_out) row-major float32, where W (a validated struct of `kind`, see rows.h) is
 * (groups * per_out, per_in). DNNZ_E_ARGUMENT when groups < 1 or does not divide W's rows. */
int dnnz_conv_grouped(int kind, const void *m, const float *cols, int64_t groups, int64_t n, float *y);

/* Geometry of a depthwise convolution (one input channel per group), 2-D (1-D: h = kh = 1). */
struct dnnz_conv_geom {
    int64_t batch, channels, mult;  /* output channels = channels * mult */
    int64_t h, w;                   /* input size (without padding) */
    int64_t kh, kw, sh, sw, dh, dw; /* kernel, stride, dilation */
    int64_t oh, ow;                 /* output size: (h + pt + pb - dh*(kh-1) - 1) / sh + 1, same for w */
    int64_t pt, pl;                 /* zero padding above and left of the input (below / right: implied
                                       by oh, ow; rows and columns outside the input read as zero) */
};
/* Depthwise convolution straight from the input, zero padding included, no im2col:
 * y[b, c*mult + j, p, q] = bias[c*mult + j] + sum_{u,v} W[c*mult + j, 0, u, v] *
 *                          x[b, c, p*sh + u*dh - pt, q*sw + v*dw - pl]     (x outside the input: 0)
 * with x (batch, channels, h, w) and y (batch, channels*mult, oh, ow) row-major float32, bias NULL
 * (none) or channels*mult floats, and W a validated struct of `kind` of shape
 * (channels * mult, kh * kw). The weight is decoded a block of channels at a time (at most
 * DNNZ_CONV_WBUF floats); (sample, channel) pairs are split across threads. Temporary memory: that
 * block and a 64 KiB scratch per thread (more only when one output row's input rows need it). */
int dnnz_conv_depthwise(int kind, const void *m, const struct dnnz_conv_geom *g, const float *x, const float *bias,
                        float *y);
/* cffi:end */

#define DNNZ_CONV_SMALL_OUT 8
#define DNNZ_CONV_WBUF (1 << 16)

#endif /* DNNZ_CONV_H */
