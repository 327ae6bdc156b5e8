// Prototype, not shipped: a fused BERT attention core (fp32, AVX-512) on the packed q|k|v projection.
// It measures how much faster than onnxruntime's own CPU attention kernels the core could run (README.md).
// L: a multiple of 64, at most 512; head size 32 (MiniLM); one OpenMP task per (batch, head).
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>

static inline __m512 exp512(__m512 x) {  // exp(x) for x <= 0, ~1e-7 relative (Cephes-style, 2^n * p(r))
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), ln2 = _mm512_set1_ps(0.693147180559945309f);
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2, x);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

#define D 32
#define R 4
// qkv: [B, L, 3*H*D]; mask: [B, L] (1 keep, 0 pad); out: [B, L, H*D]. L % 16 == 0, L <= 512.
void attention(const float* qkv, const int64_t* mask, float* out, int B, int L, int H, int threads) {
    const int E = H * D, row = 3 * E;
    const float scale = 1.0f / sqrtf((float)D);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float kt[D * 512] __attribute__((aligned(64)));
        float bias[512] __attribute__((aligned(64)));
        float s[R * 512] __attribute__((aligned(64)));
        const float* base = qkv + (size_t)b * L * row;
        for (int j = 0; j < L; j++) {
            const float* k = base + (size_t)j * row + E + h * D;
            for (int d = 0; d < D; d++) kt[d * L + j] = k[d] * scale;
            bias[j] = mask[(size_t)b * L + j] ? 0.0f : -10000.0f;
        }
        for (int i0 = 0; i0 < L; i0 += R) {
            const float* q[R];
            for (int r = 0; r < R; r++) q[r] = base + (size_t)(i0 + r) * row + h * D;
            for (int j0 = 0; j0 < L; j0 += 64) {
                const int nj = 4;  // 64 keys per block: the accumulators stay in registers
                __m512 acc[R][4];
                for (int r = 0; r < R; r++) for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
                for (int d = 0; d < D; d++) {
                    __m512 kv[4];
                    for (int c = 0; c < nj; c++) kv[c] = _mm512_load_ps(kt + d * L + j0 + 16 * c);
                    for (int r = 0; r < R; r++) {
                        __m512 qb = _mm512_set1_ps(q[r][d]);
                        for (int c = 0; c < nj; c++) acc[r][c] = _mm512_fmadd_ps(qb, kv[c], acc[r][c]);
                    }
                }
                for (int r = 0; r < R; r++) for (int c = 0; c < nj; c++)
                    _mm512_store_ps(s + r * L + j0 + 16 * c, _mm512_add_ps(acc[r][c], _mm512_load_ps(bias + j0 + 16 * c)));
            }
            float inv[R];
            for (int r = 0; r < R; r++) {
                float* sr = s + r * L;
                __m512 m = _mm512_set1_ps(-INFINITY);
                for (int j = 0; j < L; j += 16) m = _mm512_max_ps(m, _mm512_load_ps(sr + j));
                __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(m)), sum = _mm512_setzero_ps();
                for (int j = 0; j < L; j += 16) {
                    __m512 e = exp512(_mm512_sub_ps(_mm512_load_ps(sr + j), mx));
                    _mm512_store_ps(sr + j, e); sum = _mm512_add_ps(sum, e);
                }
                inv[r] = 1.0f / _mm512_reduce_add_ps(sum);
            }
            __m512 o[R][2];
            for (int r = 0; r < R; r++) o[r][0] = o[r][1] = _mm512_setzero_ps();
            for (int j = 0; j < L; j++) {
                const float* v = base + (size_t)j * row + 2 * E + h * D;
                __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16);
                for (int r = 0; r < R; r++) {
                    __m512 p = _mm512_set1_ps(s[r * L + j]);
                    o[r][0] = _mm512_fmadd_ps(p, v0, o[r][0]); o[r][1] = _mm512_fmadd_ps(p, v1, o[r][1]);
                }
            }
            for (int r = 0; r < R; r++) {
                float* dst = out + ((size_t)b * L + i0 + r) * E + h * D;
                __m512 w = _mm512_set1_ps(inv[r]);
                _mm512_storeu_ps(dst, _mm512_mul_ps(o[r][0], w)); _mm512_storeu_ps(dst + 16, _mm512_mul_ps(o[r][1], w));
            }
        }
    }
}
