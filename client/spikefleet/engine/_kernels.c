/*
 * The engine's integer kernels: convolution (FullyConnected is a convolution of
 * one position) and folded global pooling over uint8 activation levels, with
 * akida's activation fused in.
 *
 * DVS frames and spike maps are mostly zeros. A frame is first listed as the
 * non-zero (channel, value) entries of each pixel; every output position then
 * sums the weight rows of the entries its taps read, a block of filters at a
 * time in registers, and fires straight from those registers. Potentials are
 * exact int32: layers.py refuses a layer whose sums could leave int32. The GIL
 * is released while a kernel runs.
 *
 * Arrays arrive through the buffer protocol as flat C-contiguous memory;
 * layers.py owns the shapes. Buffer lengths are checked on every call, the
 * index tables once per layer by check_conv().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif
#define INLINE static inline __attribute__((always_inline))

#define POTENTIAL_MIN (-(1 << 19))
#define POTENTIAL_MAX ((1 << 19) - 1)
#define LANES 8 /* weight rows are padded to a multiple of this many filters */

/* How a layer turns int32 potentials into outputs. */
typedef struct {
    const int32_t *boundaries; /* (levels, filters): level >= k iff p > row k-1; NULL: raw int32 */
    Py_ssize_t levels;
    int saturate; /* clip potentials to 20-bit signed first */
} Finish;

/* Outputs for filters [first, first + count) of one position from their potentials
 * (clipped in place when the layer saturates). */
INLINE void
fire(int32_t *restrict potentials, Py_ssize_t first, Py_ssize_t count, const Finish *how,
     Py_ssize_t filters, void *restrict out)
{
    if (how->saturate) {
        for (Py_ssize_t f = 0; f < count; f++) {
            int32_t p = potentials[f];
            potentials[f] =
                p < POTENTIAL_MIN ? POTENTIAL_MIN : (p > POTENTIAL_MAX ? POTENTIAL_MAX : p);
        }
    }
    if (how->boundaries == NULL) {
        memcpy((int32_t *)out + first, potentials, sizeof(int32_t) * (size_t)count);
        return;
    }
    uint8_t *restrict levels = (uint8_t *)out + first;
    const int32_t *restrict bounds = how->boundaries + first;
    for (Py_ssize_t f = 0; f < count; f++)
        levels[f] = (uint8_t)(potentials[f] > bounds[f]);
    for (Py_ssize_t k = 1; k < how->levels; k++) {
        bounds += filters;
        for (Py_ssize_t f = 0; f < count; f++)
            levels[f] += (uint8_t)(potentials[f] > bounds[f]);
    }
}

/* A convolution's index tables (see conv_doc). */
typedef struct {
    Py_ssize_t frame, pixels, positions, filters, padded;
    Py_ssize_t words; /* > 0: pixel p is bytes [p * 8 * words, (p + 1) * 8 * words) in channel
                       * order (pixel_of = i / channels, channel_of = i % channels * padded) */
    const int32_t *pixel_of, *channel_of; /* per input byte; channel_of is channel * padded */
    const int32_t *pair_start, *pair_pixel, *pair_tap; /* by output position */
    const int32_t *read_start, *read_out, *read_tap;   /* the same pairs by input pixel */
} ConvPlan;

/* A frame's non-zero bytes, grouped by pixel: the pixels that have any are used[u], with
 * entries used_start[u] .. used_start[u + 1]. index_pixels() also fills start[p] for every
 * pixel, entries start[p] .. start[p + 1], which the gather form needs. */
typedef struct {
    int32_t *start, *offset, *used, *used_start;
    uint8_t *value;
    Py_ssize_t count, used_count;
} Entries;

/* Gathering costs a little per (position, tap) pair even when the pixel is empty, and
 * scattering costs a read-modify-write per weight row: scatter while the non-zero bytes
 * times the row width stay below this many per input pixel (measured on DVS-like frames). */
#define SCATTER_BELOW 24

INLINE void
list_entries(const ConvPlan *plan, const uint8_t *restrict x, Entries *entries)
{
    const int32_t *restrict pixel_of = plan->pixel_of, *restrict channel_of = plan->channel_of;
    int32_t *restrict offset = entries->offset, *restrict used = entries->used;
    int32_t *restrict used_start = entries->used_start;
    uint8_t *restrict value = entries->value;
    Py_ssize_t frame = plan->frame, count = 0, used_count = 0, i = 0;
    int32_t last = -1;
#define ENTRY(at)                                                                              \
    do {                                                                                       \
        if (pixel_of[at] != last) {                                                            \
            last = pixel_of[at];                                                               \
            used[used_count] = last;                                                           \
            used_start[used_count++] = (int32_t)count;                                         \
        }                                                                                      \
        offset[count] = channel_of[at];                                                        \
        value[count++] = x[at];                                                                \
    } while (0)
    for (; i + 8 <= frame; i += 8) {
        uint64_t word;
        memcpy(&word, x + i, 8);
        while (word) {
            int bit = __builtin_ctzll(word);
            word &= ~((uint64_t)0xff << (bit & ~7));
            ENTRY(i + (bit >> 3));
        }
    }
    for (; i < frame; i++)
        if (x[i])
            ENTRY(i);
#undef ENTRY
    used_start[used_count] = (int32_t)count;
    entries->count = count;
    entries->used_count = used_count;
}

/* list_entries() for maps of 8k channels read a word at a time per pixel: no table lookups,
 * and start[] comes out filled for every pixel. */
INLINE void
list_pixel_entries(const ConvPlan *plan, const uint8_t *restrict x, Entries *entries,
                   const int binary)
{
    int32_t *restrict offset = entries->offset, *restrict used = entries->used;
    int32_t *restrict used_start = entries->used_start, *restrict start = entries->start;
    uint8_t *restrict value = entries->value;
    Py_ssize_t words = plan->words, padded = plan->padded, count = 0, used_count = 0;
    for (Py_ssize_t pixel = 0; pixel < plan->pixels; pixel++, x += 8 * words) {
        start[pixel] = (int32_t)count;
        Py_ssize_t first = count;
        for (Py_ssize_t w = 0; w < words; w++) {
            uint64_t word;
            memcpy(&word, x + 8 * w, 8);
            while (word) {
                int bit = __builtin_ctzll(word);
                word &= ~((uint64_t)0xff << (bit & ~7));
                Py_ssize_t channel = 8 * w + (bit >> 3);
                offset[count] = (int32_t)(channel * padded);
                if (!binary)
                    value[count] = x[channel];
                count++;
            }
        }
        if (count > first) {
            used[used_count] = (int32_t)pixel;
            used_start[used_count++] = (int32_t)first;
        }
    }
    start[plan->pixels] = (int32_t)count;
    used_start[used_count] = (int32_t)count;
    entries->count = count;
    entries->used_count = used_count;
}

INLINE void
index_pixels(const ConvPlan *plan, Entries *entries)
{
    int32_t *restrict start = entries->start;
    Py_ssize_t pixel = 0;
    for (Py_ssize_t u = 0; u < entries->used_count; u++)
        for (; pixel <= entries->used[u]; pixel++)
            start[pixel] = entries->used_start[u];
    for (; pixel <= plan->pixels; pixel++)
        start[pixel] = (int32_t)entries->count;
}

/* The scatter form: every entry adds its weight rows to the accumulators of the positions
 * that read its pixel; then every position fires and its accumulators are cleared. */
INLINE void
scatter(const ConvPlan *plan, const int32_t *weights, const Entries *entries, const int binary,
        int32_t *restrict acc, const Finish *how, const Finish *tiled, char *out,
        Py_ssize_t item)
{
    Py_ssize_t padded = plan->padded;
    for (Py_ssize_t u = 0; u < entries->used_count; u++) {
        int32_t pixel = entries->used[u];
        for (int32_t k = plan->read_start[pixel]; k < plan->read_start[pixel + 1]; k++) {
            int32_t *restrict sums = acc + plan->read_out[k];
            const int32_t *tap = weights + plan->read_tap[k];
            for (int32_t e = entries->used_start[u]; e < entries->used_start[u + 1]; e++) {
                const int32_t *restrict row = tap + entries->offset[e];
                if (binary) {
                    for (Py_ssize_t f = 0; f < padded; f++)
                        sums[f] += row[f];
                } else {
                    int32_t v = entries->value[e];
                    for (Py_ssize_t f = 0; f < padded; f++)
                        sums[f] += v * row[f];
                }
            }
        }
    }
    if (padded == plan->filters && (how->boundaries == NULL || tiled->boundaries != NULL)) {
        /* one flat pass: the boundaries are tiled over the positions */
        Py_ssize_t all = plan->positions * padded;
        fire(acc, 0, all, how->boundaries ? tiled : how, all, out);
        memset(acc, 0, sizeof(int32_t) * (size_t)all);
        return;
    }
    for (Py_ssize_t p = 0; p < plan->positions; p++) {
        fire(acc + p * padded, 0, plan->filters, how, plan->filters,
             out + p * plan->filters * item);
        memset(acc + p * padded, 0, sizeof(int32_t) * (size_t)padded);
    }
}

/* Eight int32 lanes: one AVX2 register, or two SSE registers in the default build. */
typedef int32_t lanes __attribute__((vector_size(LANES * sizeof(int32_t))));

/* Potentials of vectors * LANES filters of one position, summed in registers (vectors is a
 * constant after inlining). Binary inputs (spikes) skip the multiply. */
INLINE void
block_sum(int32_t *restrict block, const int vectors, const int binary, const ConvPlan *plan,
          Py_ssize_t position, const int32_t *restrict weights, const Entries *entries)
{
    const int32_t *restrict start = entries->start, *restrict offset = entries->offset;
    const uint8_t *restrict value = entries->value;
    const int32_t *restrict pair_pixel = plan->pair_pixel, *restrict pair_tap = plan->pair_tap;
    lanes sums[8] = {{0}};
    for (int32_t k = plan->pair_start[position]; k < plan->pair_start[position + 1]; k++) {
        const int32_t *tap = weights + pair_tap[k];
        int32_t end = start[pair_pixel[k] + 1];
        for (int32_t e = start[pair_pixel[k]]; e < end; e++) {
            const int32_t *row = tap + offset[e];
            for (int v = 0; v < vectors; v++) {
                lanes w;
                memcpy(&w, row + v * LANES, sizeof w);
                if (binary)
                    sums[v] += w;
                else
                    sums[v] += (int32_t)value[e] * w;
            }
        }
    }
    for (int v = 0; v < vectors; v++)
        memcpy(block + v * LANES, &sums[v], sizeof sums[v]);
}

/* Fire filters [f0, f0 + vectors * LANES) of one position. */
INLINE void
conv_block(const ConvPlan *plan, Py_ssize_t position, Py_ssize_t f0, const int vectors,
           const int32_t *weights, const Entries *entries, const int binary, const Finish *how,
           void *out)
{
    int32_t block[8 * LANES];
    block_sum(block, vectors, binary, plan, position, weights + f0, entries);
    Py_ssize_t count = plan->filters - f0 < vectors * LANES ? plan->filters - f0 : vectors * LANES;
    fire(block, f0, count, how, plan->filters, out);
}

/* The gather form: each position sums the entries its taps read, 64, 32, 16 then 8 filters
 * at a time. */
INLINE void
conv_position(const ConvPlan *plan, Py_ssize_t position, const int32_t *weights,
              const Entries *entries, const int binary, const Finish *how, void *out)
{
    Py_ssize_t f0 = 0, padded = plan->padded;
    for (; f0 + 8 * LANES <= padded; f0 += 8 * LANES)
        conv_block(plan, position, f0, 8, weights, entries, binary, how, out);
    if (f0 + 4 * LANES <= padded) {
        conv_block(plan, position, f0, 4, weights, entries, binary, how, out);
        f0 += 4 * LANES;
    }
    if (f0 + 2 * LANES <= padded) {
        conv_block(plan, position, f0, 2, weights, entries, binary, how, out);
        f0 += 2 * LANES;
    }
    if (f0 < padded)
        conv_block(plan, position, f0, 1, weights, entries, binary, how, out);
}

/* Sixteen int16 lanes, for layers whose sums always fit int16 (checked by layers.py):
 * twice the filters per instruction. */
#define NARROW_LANES 16
typedef int16_t narrow_lanes __attribute__((vector_size(NARROW_LANES * sizeof(int16_t))));

INLINE void
narrow_block(const ConvPlan *plan, Py_ssize_t position, Py_ssize_t f0, const int vectors,
             const int16_t *restrict weights, const Entries *entries, const int binary,
             const Finish *how, void *out)
{
    const int32_t *restrict start = entries->start, *restrict offset = entries->offset;
    const uint8_t *restrict value = entries->value;
    const int32_t *restrict pair_pixel = plan->pair_pixel, *restrict pair_tap = plan->pair_tap;
    narrow_lanes sums[4] = {{0}};
    weights += f0;
    for (int32_t k = plan->pair_start[position]; k < plan->pair_start[position + 1]; k++) {
        const int16_t *tap = weights + pair_tap[k];
        int32_t end = start[pair_pixel[k] + 1];
        for (int32_t e = start[pair_pixel[k]]; e < end; e++) {
            const int16_t *row = tap + offset[e];
            for (int v = 0; v < vectors; v++) {
                narrow_lanes w;
                memcpy(&w, row + v * NARROW_LANES, sizeof w);
                if (binary)
                    sums[v] += w;
                else
                    sums[v] += (int16_t)value[e] * w;
            }
        }
    }
    int32_t block[4 * NARROW_LANES];
    for (int v = 0; v < vectors; v++)
        for (int f = 0; f < NARROW_LANES; f++)
            block[v * NARROW_LANES + f] = sums[v][f];
    Py_ssize_t width = vectors * NARROW_LANES;
    Py_ssize_t count = plan->filters - f0 < width ? plan->filters - f0 : width;
    fire(block, f0, count, how, plan->filters, out);
}

/* The gather form on int16 weights: 64, 32 then 16 filters at a time. */
INLINE void
narrow_position(const ConvPlan *plan, Py_ssize_t position, const int16_t *weights,
                const Entries *entries, const int binary, const Finish *how, void *out)
{
    Py_ssize_t f0 = 0, padded = plan->padded;
    for (; f0 + 4 * NARROW_LANES <= padded; f0 += 4 * NARROW_LANES)
        narrow_block(plan, position, f0, 4, weights, entries, binary, how, out);
    if (f0 + 2 * NARROW_LANES <= padded) {
        narrow_block(plan, position, f0, 2, weights, entries, binary, how, out);
        f0 += 2 * NARROW_LANES;
    }
    if (f0 < padded)
        narrow_block(plan, position, f0, 1, weights, entries, binary, how, out);
}

/* The scatter form on int16 accumulators, for unpadded rows: the positions fire in one
 * flat pass against boundaries tiled over them (clipped to int16, which no sum reaches). */
typedef struct {
    const int16_t *boundaries; /* (levels, positions * filters), or NULL for potentials */
    Py_ssize_t levels;
} NarrowFinish;

INLINE void
narrow_scatter(const ConvPlan *plan, const int16_t *weights, const Entries *entries,
               const int binary, int16_t *restrict acc, const NarrowFinish *how, char *out)
{
    Py_ssize_t filters = plan->filters;
    for (Py_ssize_t u = 0; u < entries->used_count; u++) {
        int32_t pixel = entries->used[u];
        for (int32_t k = plan->read_start[pixel]; k < plan->read_start[pixel + 1]; k++) {
            int16_t *restrict sums = acc + plan->read_out[k];
            const int16_t *tap = weights + plan->read_tap[k];
            for (int32_t e = entries->used_start[u]; e < entries->used_start[u + 1]; e++) {
                const int16_t *restrict row = tap + entries->offset[e];
                if (binary) {
                    for (Py_ssize_t f = 0; f < filters; f++)
                        sums[f] += row[f];
                } else {
                    int16_t v = entries->value[e];
                    for (Py_ssize_t f = 0; f < filters; f++)
                        sums[f] += (int16_t)(v * row[f]);
                }
            }
        }
    }
    Py_ssize_t all = plan->positions * filters;
    if (how->boundaries == NULL) {
        int32_t *restrict values = (int32_t *)out;
        for (Py_ssize_t i = 0; i < all; i++)
            values[i] = acc[i];
    }
    else {
        uint8_t *restrict levels = (uint8_t *)out;
        const int16_t *restrict bounds = how->boundaries;
        for (Py_ssize_t i = 0; i < all; i++)
            levels[i] = (uint8_t)(acc[i] > bounds[i]);
        for (Py_ssize_t k = 1; k < how->levels; k++) {
            bounds += all;
            for (Py_ssize_t i = 0; i < all; i++)
                levels[i] += (uint8_t)(acc[i] > bounds[i]);
        }
    }
    memset(acc, 0, sizeof(int16_t) * (size_t)all);
}

HOT static void
conv_frames(Py_ssize_t n, const ConvPlan *plan, const uint8_t *x, const int32_t *weights,
            const int16_t *narrow, int binary, Entries *entries, int32_t *acc,
            const Finish *how, const Finish *tiled, const NarrowFinish *narrow_how, char *out,
            Py_ssize_t item)
{
    Py_ssize_t frame_out = plan->positions * plan->filters * item;
    for (Py_ssize_t s = 0; s < n; s++, x += plan->frame, out += frame_out) {
        if (plan->words && binary)
            list_pixel_entries(plan, x, entries, 1);
        else if (plan->words)
            list_pixel_entries(plan, x, entries, 0);
        else
            list_entries(plan, x, entries);
        if (entries->count * plan->padded < SCATTER_BELOW * plan->pixels) {
            if (narrow_how && binary)
                narrow_scatter(plan, narrow, entries, 1, (int16_t *)acc, narrow_how, out);
            else if (narrow_how)
                narrow_scatter(plan, narrow, entries, 0, (int16_t *)acc, narrow_how, out);
            else if (binary)
                scatter(plan, weights, entries, 1, acc, how, tiled, out, item);
            else
                scatter(plan, weights, entries, 0, acc, how, tiled, out, item);
            continue;
        }
        if (!plan->words)
            index_pixels(plan, entries);
        for (Py_ssize_t p = 0; p < plan->positions; p++) {
            char *position_out = out + p * plan->filters * item;
            if (narrow && binary)
                narrow_position(plan, p, narrow, entries, 1, how, position_out);
            else if (narrow)
                narrow_position(plan, p, narrow, entries, 0, how, position_out);
            else if (binary)
                conv_position(plan, p, weights, entries, 1, how, position_out);
            else
                conv_position(plan, p, weights, entries, 0, how, position_out);
        }
    }
}

typedef struct {
    Py_buffer x, weights, out, boundaries;
} Buffers;

static void
release(Buffers *b)
{
    if (b->x.obj)
        PyBuffer_Release(&b->x);
    if (b->weights.obj)
        PyBuffer_Release(&b->weights);
    if (b->out.obj)
        PyBuffer_Release(&b->out);
    if (b->boundaries.obj)
        PyBuffer_Release(&b->boundaries);
}

/* Check buffer lengths (in bytes) and set up the Finish; 0 on success. */
static int
check(Buffers *b, PyObject *boundaries, Py_ssize_t x_len, Py_ssize_t w_len, Py_ssize_t outputs,
      Py_ssize_t filters, int saturate, Finish *how)
{
    how->boundaries = NULL;
    how->levels = 0;
    how->saturate = saturate;
    if (b->x.len != x_len) {
        PyErr_Format(PyExc_ValueError, "input holds %zd bytes, expected %zd", b->x.len, x_len);
        return -1;
    }
    if (b->weights.len != w_len * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_Format(PyExc_ValueError, "weights hold %zd bytes, expected %zd int32", b->weights.len,
                     w_len);
        return -1;
    }
    Py_ssize_t item = sizeof(int32_t);
    if (boundaries != Py_None) {
        if (PyObject_GetBuffer(boundaries, &b->boundaries, PyBUF_C_CONTIGUOUS) < 0)
            return -1;
        Py_ssize_t row = filters * (Py_ssize_t)sizeof(int32_t);
        if (filters <= 0 || b->boundaries.len == 0 || b->boundaries.len % row) {
            PyErr_SetString(PyExc_ValueError, "boundaries must be int32 (levels, filters)");
            return -1;
        }
        how->boundaries = (const int32_t *)b->boundaries.buf;
        how->levels = b->boundaries.len / row;
        item = 1;
    }
    if (b->out.len != outputs * item) {
        PyErr_Format(PyExc_ValueError, "output holds %zd bytes, expected %zd", b->out.len,
                     outputs * item);
        return -1;
    }
    return 0;
}

/* A compiled convolution: its plan, weights and activation in memory of its own, and
 * scratch for one call at a time (calls that find it busy allocate their own). */
typedef struct {
    ConvPlan plan;
    const int32_t *weights;
    const int16_t *narrow; /* the weights as int16 when every sum fits, else NULL */
    NarrowFinish narrow_how, narrow_potentials; /* for narrow_scatter; levels 0: not usable */
    Finish how, tiled; /* tiled: the boundaries repeated for every position, or none */
    int binary;
    void *owned, *scratch, *tiled_owned, *narrow_owned, *narrow_tiled_owned;
    int scratch_busy; /* read and written only while holding the GIL */
} Kernel;

#define KERNEL_CAPSULE "spikefleet.engine._kernels.Kernel"
#define TABLES 8

static size_t
scratch_size(const ConvPlan *plan)
{
    size_t frame = (size_t)plan->frame, sums = (size_t)(plan->positions * plan->padded);
    return sizeof(int32_t) * (sums + 4 * (size_t)plan->pixels + 2 + frame) + frame + 1;
}

static void
kernel_free(PyObject *capsule)
{
    Kernel *kernel = PyCapsule_GetPointer(capsule, KERNEL_CAPSULE);
    if (kernel) {
        free(kernel->owned);
        free(kernel->scratch);
        free(kernel->tiled_owned);
        free(kernel->narrow_owned);
        free(kernel->narrow_tiled_owned);
        free(kernel);
    }
}

/* The tables' consistency: every index stays inside its array. */
static int
plan_is_sound(const ConvPlan *plan, const Py_ssize_t lengths[TABLES], Py_ssize_t rows)
{
    Py_ssize_t positions = plan->positions, padded = plan->padded, pairs = lengths[3];
    if (plan->filters < 1 || padded < plan->filters || padded % LANES || positions < 0 ||
        lengths[1] != lengths[0] || lengths[4] != pairs || lengths[6] != pairs ||
        lengths[7] != pairs || lengths[2] != positions + 1 || lengths[5] != plan->pixels + 1 ||
        plan->pair_start[0] != 0 || plan->pair_start[positions] != pairs ||
        plan->read_start[0] != 0 || plan->read_start[plan->pixels] != pairs)
        return 0;
    int32_t top_channel = 0;
    for (Py_ssize_t i = 0; i < plan->frame; i++) {
        if (plan->pixel_of[i] < (i ? plan->pixel_of[i - 1] : 0) || plan->channel_of[i] < 0)
            return 0;
        top_channel = plan->channel_of[i] > top_channel ? plan->channel_of[i] : top_channel;
    }
    for (Py_ssize_t p = 0; p < positions; p++)
        if (plan->pair_start[p] > plan->pair_start[p + 1])
            return 0;
    for (Py_ssize_t p = 0; p < plan->pixels; p++)
        if (plan->read_start[p] > plan->read_start[p + 1])
            return 0;
    for (Py_ssize_t k = 0; k < pairs; k++) {
        if (plan->pair_pixel[k] < 0 || plan->pair_pixel[k] >= plan->pixels ||
            plan->pair_tap[k] < 0 || plan->pair_tap[k] + (Py_ssize_t)top_channel + padded > rows ||
            plan->read_out[k] < 0 || plan->read_out[k] + padded > positions * padded ||
            plan->read_tap[k] < 0 || plan->read_tap[k] + (Py_ssize_t)top_channel + padded > rows)
            return 0;
    }
    return 1;
}

PyDoc_STRVAR(compile_conv_doc,
             "compile_conv(weights, boundaries, pixel_of, channel_of, pair_start, pair_pixel,\n"
             "             pair_tap, read_start, read_out, read_tap, positions, filters, padded,\n"
             "             binary, saturate, narrow) -> kernel\n\n"
             "A convolution for conv(): int32 weight rows of `padded` filters; byte i of a\n"
             "frame belongs to pixel pixel_of[i] (non-decreasing) and reads the weight row at\n"
             "channel_of[i]; output position p sums, for k in pair_start[p]:pair_start[p + 1],\n"
             "the rows at pair_tap[k] + channel_of[i] times byte i over the bytes i of pixel\n"
             "pair_pixel[k]; read_* hold the same pairs by pixel (read_out = position * padded).\n"
             "boundaries (int32 (levels, filters) or None) are the activation; binary says\n"
             "every input byte is 0 or 1; saturate clips potentials to 20 bits; narrow says\n"
             "every sum fits int16 (padded must then be a multiple of 16). Everything is\n"
             "copied and checked: ValueError when an index points outside its array.");

static PyObject *
compile_conv(PyObject *self, PyObject *args)
{
    PyObject *objects[TABLES + 2];
    Py_buffer buffers[TABLES + 2];
    Py_ssize_t positions, filters, padded;
    int binary, saturate, narrow;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOnnnppp", &objects[0], &objects[1], &objects[2],
                          &objects[3], &objects[4], &objects[5], &objects[6], &objects[7],
                          &objects[8], &objects[9], &positions, &filters, &padded, &binary,
                          &saturate, &narrow))
        return NULL;
    int got = 0;
    for (; got < TABLES + 2; got++) {
        if (got == 1 && objects[1] == Py_None) {
            buffers[1].obj = NULL;
            buffers[1].len = 0;
            continue;
        }
        if (PyObject_GetBuffer(objects[got], &buffers[got], PyBUF_C_CONTIGUOUS) < 0)
            break;
    }
    Kernel *kernel = NULL;
    size_t total = 0;
    for (int t = 0; t < got; t++)
        total += (size_t)buffers[t].len;
    if (got == TABLES + 2) {
        kernel = calloc(1, sizeof(Kernel));
        if (kernel)
            kernel->owned = malloc(total + 1);
        if (!kernel || !kernel->owned)
            PyErr_NoMemory();
    }
    if (kernel && kernel->owned) {
        const int32_t *copies[TABLES + 2];
        Py_ssize_t lengths[TABLES];
        char *at = kernel->owned;
        for (int t = 0; t < TABLES + 2; t++) {
            memcpy(at, buffers[t].buf, (size_t)buffers[t].len);
            copies[t] = (const int32_t *)at;
            at += buffers[t].len;
        }
        for (int t = 0; t < TABLES; t++)
            lengths[t] = buffers[t + 2].len / (Py_ssize_t)sizeof(int32_t);
        ConvPlan *plan = &kernel->plan;
        plan->frame = lengths[0];
        plan->positions = positions;
        plan->filters = filters;
        plan->padded = padded;
        plan->pixel_of = copies[2];
        plan->channel_of = copies[3];
        plan->pair_start = copies[4];
        plan->pair_pixel = copies[5];
        plan->pair_tap = copies[6];
        plan->read_start = copies[7];
        plan->read_out = copies[8];
        plan->read_tap = copies[9];
        plan->pixels = plan->frame ? plan->pixel_of[plan->frame - 1] + 1 : 0;
        plan->words = 0;
        Py_ssize_t channels = plan->pixels ? plan->frame / plan->pixels : 0;
        if (channels && channels % 8 == 0 && channels * plan->pixels == plan->frame) {
            int regular = 1;
            for (Py_ssize_t i = 0; regular && i < plan->frame; i++)
                regular = plan->pixel_of[i] == i / channels &&
                          plan->channel_of[i] == (i % channels) * padded;
            plan->words = regular ? channels / 8 : 0;
        }
        kernel->weights = copies[0];
        kernel->binary = binary;
        kernel->how.saturate = saturate;
        Py_ssize_t row = filters * (Py_ssize_t)sizeof(int32_t);
        if (buffers[1].len) {
            kernel->how.boundaries = copies[1];
            kernel->how.levels = buffers[1].len / row;
        }
        Py_ssize_t rows = buffers[0].len / (Py_ssize_t)sizeof(int32_t);
        int sound = lengths[2] >= 1 && lengths[5] >= 1 && filters > 0 &&
                    (!narrow || padded % NARROW_LANES == 0) &&
                    (buffers[1].len == 0 || buffers[1].len % row == 0) &&
                    plan_is_sound(plan, lengths, rows);
        if (sound)
            kernel->scratch = calloc(scratch_size(plan), 1);
        if (sound && narrow) {
            int16_t *narrow_weights = malloc(sizeof(int16_t) * (size_t)(rows + 1));
            if (narrow_weights) {
                for (Py_ssize_t r = 0; r < rows; r++)
                    narrow_weights[r] = (int16_t)kernel->weights[r];
                kernel->narrow = narrow_weights;
                kernel->narrow_owned = narrow_weights;
            }
        }
        Py_ssize_t area = positions * filters;
        if (sound && kernel->scratch && kernel->how.boundaries && padded == filters) {
            int32_t *tiled = malloc(sizeof(int32_t) * (size_t)(area * kernel->how.levels + 1));
            if (tiled) {
                for (Py_ssize_t k = 0; k < kernel->how.levels; k++)
                    for (Py_ssize_t p = 0; p < positions; p++)
                        memcpy(tiled + k * area + p * filters,
                               kernel->how.boundaries + k * filters,
                               sizeof(int32_t) * (size_t)filters);
                kernel->tiled = kernel->how;
                kernel->tiled.boundaries = tiled;
                kernel->tiled_owned = tiled;
            }
        }
        if (sound && kernel->narrow && padded == filters) {
            kernel->narrow_potentials.levels = 1; /* usable, writes potentials */
            if (kernel->tiled.boundaries) {
                Py_ssize_t count = area * kernel->how.levels;
                int16_t *bounds = malloc(sizeof(int16_t) * (size_t)(count + 1));
                if (bounds) {
                    for (Py_ssize_t i = 0; i < count; i++) {
                        int32_t b = kernel->tiled.boundaries[i];
                        bounds[i] = (int16_t)(b < INT16_MIN ? INT16_MIN
                                                            : (b > INT16_MAX ? INT16_MAX : b));
                    }
                    kernel->narrow_how.boundaries = bounds;
                    kernel->narrow_how.levels = kernel->how.levels;
                    kernel->narrow_tiled_owned = bounds;
                }
            }
        }
        if (!sound || !kernel->scratch) {
            if (!sound)
                PyErr_SetString(PyExc_ValueError, "convolution tables point outside their arrays");
            else
                PyErr_NoMemory();
            free(kernel->owned);
            free(kernel);
            kernel = NULL;
        }
    }
    else if (kernel) {
        free(kernel);
        kernel = NULL;
    }
    for (int t = 0; t < got; t++)
        if (buffers[t].obj)
            PyBuffer_Release(&buffers[t]);
    if (!kernel)
        return NULL;
    PyObject *capsule = PyCapsule_New(kernel, KERNEL_CAPSULE, kernel_free);
    if (!capsule) {
        free(kernel->owned);
        free(kernel->scratch);
        free(kernel->tiled_owned);
        free(kernel->narrow_owned);
        free(kernel->narrow_tiled_owned);
        free(kernel);
    }
    return capsule;
}

PyDoc_STRVAR(conv_doc,
             "conv(kernel, x, out, n, activate)\n\n"
             "Run a compile_conv() kernel on n uint8 frames x into out (n, positions,\n"
             "filters): uint8 levels when activate (the kernel has boundaries), else int32\n"
             "potentials.");

static PyObject *
conv(PyObject *self, PyObject *args)
{
    PyObject *capsule;
    Py_buffer x, out;
    Py_ssize_t n;
    int activate;
    if (!PyArg_ParseTuple(args, "Oy*w*np", &capsule, &x, &out, &n, &activate))
        return NULL;
    Kernel *kernel = PyCapsule_GetPointer(capsule, KERNEL_CAPSULE);
    const ConvPlan *plan = kernel ? &kernel->plan : NULL;
    Finish how = {NULL, 0, 0}, tiled = {NULL, 0, 0};
    Py_ssize_t item = sizeof(int32_t);
    if (kernel) {
        how = kernel->how;
        tiled = kernel->tiled;
        if (activate && !how.boundaries)
            PyErr_SetString(PyExc_ValueError, "this kernel has no activation");
        if (!activate)
            how.boundaries = tiled.boundaries = NULL;
        else
            item = 1;
    }
    if (kernel && !PyErr_Occurred()) {
        if (n < 0 || x.len != n * plan->frame)
            PyErr_Format(PyExc_ValueError, "input holds %zd bytes, expected %zd", x.len,
                         n * plan->frame);
        else if (out.len != n * plan->positions * plan->filters * item)
            PyErr_Format(PyExc_ValueError, "output holds %zd bytes, expected %zd", out.len,
                         n * plan->positions * plan->filters * item);
    }
    void *scratch = NULL;
    int own = 0;
    if (kernel && !PyErr_Occurred()) {
        if (kernel->scratch_busy) {
            scratch = calloc(scratch_size(plan), 1);
            own = 1;
            if (!scratch)
                PyErr_NoMemory();
        }
        else {
            scratch = kernel->scratch;
            kernel->scratch_busy = 1;
        }
    }
    if (!scratch) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&out);
        return NULL;
    }
    int32_t *acc = scratch; /* all zero between frames */
    Entries entries = {0};
    entries.start = acc + plan->positions * plan->padded;
    entries.used = entries.start + plan->pixels + 1;
    entries.used_start = entries.used + plan->pixels;
    entries.offset = entries.used_start + plan->pixels + 1;
    entries.value = (uint8_t *)(entries.offset + plan->frame);

    Py_BEGIN_ALLOW_THREADS;
    const NarrowFinish *narrow_how = NULL, potentials_only = {NULL, 0};
    if (how.boundaries && kernel->narrow_how.levels)
        narrow_how = &kernel->narrow_how;
    else if (!how.boundaries && kernel->narrow_potentials.levels)
        narrow_how = &potentials_only;
    conv_frames(n, plan, x.buf, kernel->weights, kernel->narrow, kernel->binary, &entries, acc,
                &how, &tiled, narrow_how, out.buf, item);
    Py_END_ALLOW_THREADS;

    if (own)
        free(scratch);
    else
        kernel->scratch_busy = 0;
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

HOT static void
pooled_frames(Py_ssize_t n, const uint8_t *x, const int32_t *classes, Py_ssize_t area,
              Py_ssize_t channels, const int32_t *weights, Py_ssize_t rows, Py_ssize_t filters,
              int32_t *sums, int32_t *acc, const Finish *how, char *out, Py_ssize_t item)
{
    for (Py_ssize_t s = 0; s < n; s++, x += area * channels) {
        for (Py_ssize_t p = 0; p < area; p++) {
            int32_t *restrict row = sums + classes[p] * channels;
            const uint8_t *restrict levels = x + p * channels;
            for (Py_ssize_t c = 0; c < channels; c++)
                row[c] += levels[c];
        }
        for (Py_ssize_t r = 0; r < rows; r++) {
            int32_t v = sums[r];
            if (v) {
                const int32_t *restrict w = weights + r * filters;
                for (Py_ssize_t f = 0; f < filters; f++)
                    acc[f] += v * w[f];
                sums[r] = 0;
            }
        }
        fire(acc, 0, filters, how, filters, out + s * filters * item);
        memset(acc, 0, sizeof(int32_t) * (size_t)filters);
    }
}

PyDoc_STRVAR(
    pooled_doc,
    "pooled(x, classes, weights, out, boundaries, n, area, channels, blocks, filters)\n\n"
    "A convolution followed by global sum pooling, folded: the pooled potential is\n"
    "linear in the input, and input positions that see the same taps (int32 classes,\n"
    "one per position of the area) share one (channels, filters) block of int32 weights\n"
    "(blocks, channels, filters). Writes (n, filters) int32 potentials or uint8 levels.");

static PyObject *
pooled(PyObject *self, PyObject *args)
{
    Buffers b = {0};
    Py_buffer classes_buffer = {0};
    PyObject *boundaries;
    Py_ssize_t n, area, channels, blocks, filters;
    if (!PyArg_ParseTuple(args, "y*y*y*w*Onnnnn", &b.x, &classes_buffer, &b.weights, &b.out,
                          &boundaries, &n, &area, &channels, &blocks, &filters))
        return NULL;
    Finish how;
    if (classes_buffer.len != area * (Py_ssize_t)sizeof(int32_t) ||
        check(&b, boundaries, n * area * channels, blocks * channels * filters, n * filters,
              filters, 0, &how) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "classes must be int32, one per position");
        PyBuffer_Release(&classes_buffer);
        release(&b);
        return NULL;
    }
    const int32_t *classes = classes_buffer.buf;
    for (Py_ssize_t p = 0; p < area; p++) {
        if (classes[p] < 0 || classes[p] >= blocks) {
            PyErr_SetString(PyExc_ValueError, "class index out of range");
            PyBuffer_Release(&classes_buffer);
            release(&b);
            return NULL;
        }
    }
    Py_ssize_t rows = blocks * channels;
    int32_t *sums = calloc((size_t)(rows + filters), sizeof(int32_t));
    if (!sums) {
        PyBuffer_Release(&classes_buffer);
        release(&b);
        return PyErr_NoMemory();
    }
    Py_ssize_t item = how.boundaries ? 1 : (Py_ssize_t)sizeof(int32_t);

    Py_BEGIN_ALLOW_THREADS;
    pooled_frames(n, b.x.buf, classes, area, channels, b.weights.buf, rows, filters, sums,
                  sums + rows, &how, b.out.buf, item);
    Py_END_ALLOW_THREADS;

    free(sums);
    PyBuffer_Release(&classes_buffer);
    release(&b);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(peak_doc, "peak(x) -> int\n\nThe largest byte of x (0 when empty): a range check "
                       "for frames without numpy's reduction overhead.");

static PyObject *
peak(PyObject *self, PyObject *arg)
{
    Py_buffer x;
    if (PyObject_GetBuffer(arg, &x, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    const uint8_t *bytes = x.buf;
    uint8_t top = 0;
    for (Py_ssize_t i = 0; i < x.len; i++)
        top = bytes[i] > top ? bytes[i] : top;
    PyBuffer_Release(&x);
    return PyLong_FromLong(top);
}

static PyMethodDef methods[] = {
    {"compile_conv", compile_conv, METH_VARARGS, compile_conv_doc},
    {"conv", conv, METH_VARARGS, conv_doc},
    {"pooled", pooled, METH_VARARGS, pooled_doc},
    {"peak", peak, METH_O, peak_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "spikefleet.engine._kernels",
    "Integer kernels of spikefleet's engine (see _kernels.c).", -1, methods, NULL, NULL, NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
