/*
 * The engine's integer kernels: convolution, folded global pooling and fully
 * connected layers over uint8 activation levels, with akida's activation fused in.
 *
 * DVS frames and spike maps are mostly zeros, so every kernel walks the
 * non-zero inputs and scatters their weight rows into int32 accumulators
 * instead of multiplying dense matrices; a zero input costs one byte read.
 * Potentials are exact: layers.py checks at compile time that no sum can
 * leave int32. The GIL is released while a kernel runs.
 *
 * Arrays are passed through the buffer protocol as flat C-contiguous memory;
 * layers.py owns the shapes, and every length is checked here before use.
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

#define POTENTIAL_MIN (-(1 << 19))
#define POTENTIAL_MAX ((1 << 19) - 1)

/* How a layer turns int32 potentials into outputs. */
typedef struct {
    const int32_t *boundaries; /* (levels, filters): level >= k iff p > row k-1; NULL: raw int32 */
    Py_ssize_t levels;
    int saturate; /* clip potentials to 20-bit signed first */
} Finish;

/* Write the outputs of count accumulators (positions x filters) and clear them for the next frame. */
static inline void
finish(int32_t *restrict acc, Py_ssize_t count, Py_ssize_t filters, const Finish *how,
       void *restrict out)
{
    if (how->saturate) {
        for (Py_ssize_t i = 0; i < count; i++) {
            int32_t p = acc[i];
            acc[i] = p < POTENTIAL_MIN ? POTENTIAL_MIN : (p > POTENTIAL_MAX ? POTENTIAL_MAX : p);
        }
    }
    if (how->boundaries == NULL) {
        memcpy(out, acc, (size_t)count * sizeof(int32_t));
        memset(acc, 0, (size_t)count * sizeof(int32_t));
        return;
    }
    uint8_t *restrict levels = (uint8_t *)out;
    const int32_t *restrict first = how->boundaries;
    if (how->levels == 1) {
        for (Py_ssize_t pos = 0; pos < count; pos += filters) {
            for (Py_ssize_t f = 0; f < filters; f++) {
                levels[pos + f] = (uint8_t)(acc[pos + f] > first[f]);
                acc[pos + f] = 0;
            }
        }
        return;
    }
    for (Py_ssize_t pos = 0; pos < count; pos += filters) {
        for (Py_ssize_t f = 0; f < filters; f++) {
            uint8_t level = 0;
            for (Py_ssize_t k = 0; k < how->levels; k++)
                level += (uint8_t)(acc[pos + f] > first[k * filters + f]);
            levels[pos + f] = level;
        }
    }
    memset(acc, 0, (size_t)count * sizeof(int32_t));
}

/* acc[0:filters] += value * row[0:filters] */
static inline void
add_row(int32_t *restrict acc, const int32_t *restrict row, int32_t value, Py_ssize_t filters)
{
    if (value == 1) {
        for (Py_ssize_t f = 0; f < filters; f++)
            acc[f] += row[f];
    } else {
        for (Py_ssize_t f = 0; f < filters; f++)
            acc[f] += value * row[f];
    }
}

/* sums[0:count] += levels[0:count]: dense, since a branch per byte costs more */
static inline void
add_levels(int32_t *restrict sums, const uint8_t *restrict levels, Py_ssize_t count)
{
    for (Py_ssize_t c = 0; c < count; c++)
        sums[c] += levels[c];
}

/* Index of the next non-zero byte of x[start:size], or size. */
static inline Py_ssize_t
next_nonzero(const uint8_t *x, Py_ssize_t start, Py_ssize_t size)
{
    Py_ssize_t i = start;
    while (i < size && ((uintptr_t)(x + i) & 7u))
        if (x[i])
            return i;
        else
            i++;
    while (i + 8 <= size) {
        uint64_t word;
        memcpy(&word, x + i, 8);
        if (word)
            break;
        i += 8;
    }
    while (i < size && !x[i])
        i++;
    return i;
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

/* A convolution, scattered: the non-zero input byte i (pixel i / C, channel i % C) adds
 * its value times weight row taps[k] + channel * filters to accumulator row outs[k], for
 * each k in starts[pixel] .. starts[pixel + 1]: the (output position, tap) pairs that
 * read that pixel. layers.py builds the tables once per layer. */
typedef struct {
    Py_ssize_t frame, positions, filters;
    const int32_t *pixel_of, *channel_of, *starts, *outs, *taps;
} ConvPlan;

HOT static void
conv_frames(Py_ssize_t n, const ConvPlan *plan, const uint8_t *x, const int32_t *weights,
            int32_t *acc, const Finish *how, char *out, Py_ssize_t item)
{
    Py_ssize_t filters = plan->filters, size = plan->frame;
    for (Py_ssize_t s = 0; s < n; s++, x += size) {
        for (Py_ssize_t i = next_nonzero(x, 0, size); i < size; i = next_nonzero(x, i + 1, size)) {
            int32_t pixel = plan->pixel_of[i];
            const int32_t *row = weights + (Py_ssize_t)plan->channel_of[i] * filters;
            for (int32_t k = plan->starts[pixel]; k < plan->starts[pixel + 1]; k++)
                add_row(acc + plan->outs[k], row + plan->taps[k], x[i], filters);
        }
        finish(acc, plan->positions * filters, filters, how, out + s * plan->positions * filters * item);
    }
}

/* Borrow the five int32 tables of a ConvPlan from Python objects; 0 on success. */
static int
plan_tables(PyObject *objects[5], Py_buffer tables[5], ConvPlan *plan, Py_ssize_t positions,
            Py_ssize_t filters)
{
    for (int t = 0; t < 5; t++) {
        if (PyObject_GetBuffer(objects[t], &tables[t], PyBUF_C_CONTIGUOUS) < 0) {
            while (--t >= 0)
                PyBuffer_Release(&tables[t]);
            return -1;
        }
    }
    plan->frame = tables[0].len / (Py_ssize_t)sizeof(int32_t);
    plan->positions = positions;
    plan->filters = filters;
    plan->pixel_of = tables[0].buf;
    plan->channel_of = tables[1].buf;
    plan->starts = tables[2].buf;
    plan->outs = tables[3].buf;
    plan->taps = tables[4].buf;
    return 0;
}

static void
release_tables(Py_buffer tables[5])
{
    for (int t = 0; t < 5; t++)
        PyBuffer_Release(&tables[t]);
}

PyDoc_STRVAR(check_conv_doc,
             "check_conv(weights, pixel_of, channel_of, starts, outs, taps, positions, filters)\n\n"
             "Raise ValueError unless the tables of conv() stay inside weights and the\n"
             "accumulators; conv() trusts tables that passed this check once.");

static PyObject *
check_conv(PyObject *self, PyObject *args)
{
    Py_buffer weights;
    PyObject *objects[5];
    Py_buffer tables[5];
    Py_ssize_t positions, filters;
    if (!PyArg_ParseTuple(args, "y*OOOOOnn", &weights, &objects[0], &objects[1], &objects[2],
                          &objects[3], &objects[4], &positions, &filters))
        return NULL;
    ConvPlan plan;
    if (plan_tables(objects, tables, &plan, positions, filters) < 0) {
        PyBuffer_Release(&weights);
        return NULL;
    }
    Py_ssize_t rows = weights.len / (Py_ssize_t)sizeof(int32_t);
    Py_ssize_t pixels = tables[2].len / (Py_ssize_t)sizeof(int32_t) - 1;
    Py_ssize_t pairs = tables[3].len / (Py_ssize_t)sizeof(int32_t);
    int bad = filters < 1 || positions < 0 || pixels < 0 || tables[1].len != tables[0].len ||
              tables[4].len != tables[3].len || plan.starts[0] != 0 || plan.starts[pixels] != pairs;
    for (Py_ssize_t p = 0; !bad && p < pixels; p++)
        bad = plan.starts[p] > plan.starts[p + 1];
    for (Py_ssize_t i = 0; !bad && i < plan.frame; i++)
        bad = plan.pixel_of[i] < 0 || plan.pixel_of[i] >= pixels || plan.channel_of[i] < 0 ||
              (Py_ssize_t)plan.channel_of[i] * filters + filters > rows;
    for (Py_ssize_t k = 0; !bad && k < pairs; k++)
        bad = plan.outs[k] < 0 || plan.outs[k] + filters > positions * filters ||
              plan.taps[k] < 0;
    int32_t top_channel = 0;
    for (Py_ssize_t i = 0; i < plan.frame; i++)
        top_channel = plan.channel_of[i] > top_channel ? plan.channel_of[i] : top_channel;
    for (Py_ssize_t k = 0; !bad && k < pairs; k++)
        bad = plan.taps[k] + ((Py_ssize_t)top_channel + 1) * filters > rows;
    release_tables(tables);
    PyBuffer_Release(&weights);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "convolution tables point outside their arrays");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(conv_doc,
             "conv(x, weights, out, boundaries, n, pixel_of, channel_of, starts, outs, taps,\n"
             "     positions, filters)\n\n"
             "Convolution of n uint8 frames x, scattered through int32 tables that passed\n"
             "check_conv(): byte i of a frame is pixel pixel_of[i], channel channel_of[i];\n"
             "pixel p adds to the accumulator row at offset outs[k] (position * filters) its\n"
             "value times the weight row at taps[k] + channel * filters, for k in\n"
             "starts[p]:starts[p + 1]. Writes int32 potentials, or uint8 levels when\n"
             "boundaries is given, into out (n, positions, filters).");

static PyObject *
conv(PyObject *self, PyObject *args)
{
    Buffers b = {0};
    PyObject *objects[5];
    Py_buffer tables[5];
    PyObject *boundaries;
    Py_ssize_t n, positions, filters;
    if (!PyArg_ParseTuple(args, "y*y*w*OnOOOOOnn", &b.x, &b.weights, &b.out, &boundaries, &n,
                          &objects[0], &objects[1], &objects[2], &objects[3], &objects[4],
                          &positions, &filters))
        return NULL;
    ConvPlan plan;
    if (plan_tables(objects, tables, &plan, positions, filters) < 0) {
        release(&b);
        return NULL;
    }
    Finish how;
    int32_t *acc = NULL;
    if (check(&b, boundaries, n * plan.frame, b.weights.len / (Py_ssize_t)sizeof(int32_t),
              n * positions * filters, filters, 0, &how) == 0) {
        acc = calloc((size_t)(positions * filters + 1), sizeof(int32_t));
        if (!acc)
            PyErr_NoMemory();
    }
    if (!acc) {
        release_tables(tables);
        release(&b);
        return NULL;
    }
    Py_ssize_t item = how.boundaries ? 1 : (Py_ssize_t)sizeof(int32_t);

    Py_BEGIN_ALLOW_THREADS;
    conv_frames(n, &plan, b.x.buf, b.weights.buf, acc, &how, b.out.buf, item);
    Py_END_ALLOW_THREADS;

    free(acc);
    release_tables(tables);
    release(&b);
    Py_RETURN_NONE;
}

HOT static void
pooled_frames(Py_ssize_t n, const uint8_t *x, const int32_t *classes, Py_ssize_t area,
              Py_ssize_t channels, const int32_t *weights, Py_ssize_t rows, Py_ssize_t filters,
              int32_t *sums, int32_t *acc, const Finish *how, char *out, Py_ssize_t item)
{
    for (Py_ssize_t s = 0; s < n; s++, x += area * channels) {
        for (Py_ssize_t p = 0; p < area; p++)
            add_levels(sums + classes[p] * channels, x + p * channels, channels);
        for (Py_ssize_t r = 0; r < rows; r++) {
            if (sums[r]) {
                add_row(acc, weights + r * filters, sums[r], filters);
                sums[r] = 0;
            }
        }
        finish(acc, filters, filters, how, out + s * filters * item);
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

HOT static void
dense_frames(Py_ssize_t n, const uint8_t *x, const int32_t *weights, Py_ssize_t inputs,
             Py_ssize_t filters, int32_t *acc, const Finish *how, char *out, Py_ssize_t item)
{
    for (Py_ssize_t s = 0; s < n; s++, x += inputs) {
        for (Py_ssize_t i = next_nonzero(x, 0, inputs); i < inputs;
             i = next_nonzero(x, i + 1, inputs))
            add_row(acc, weights + i * filters, x[i], filters);
        finish(acc, filters, filters, how, out + s * filters * item);
    }
}

PyDoc_STRVAR(dense_doc,
             "dense(x, weights, out, boundaries, n, inputs, filters, saturate)\n\n"
             "uint8 x (n, inputs) times int32 weights (inputs, filters), potentials clipped to\n"
             "20 bits when saturate; writes int32 potentials or uint8 levels (n, filters).");

static PyObject *
dense(PyObject *self, PyObject *args)
{
    Buffers b = {0};
    PyObject *boundaries;
    Py_ssize_t n, inputs, filters;
    int saturate;
    if (!PyArg_ParseTuple(args, "y*y*w*Onnnp", &b.x, &b.weights, &b.out, &boundaries, &n, &inputs,
                          &filters, &saturate))
        return NULL;
    Finish how;
    if (check(&b, boundaries, n * inputs, inputs * filters, n * filters, filters, saturate, &how) <
        0) {
        release(&b);
        return NULL;
    }
    int32_t *acc = calloc((size_t)(filters ? filters : 1), sizeof(int32_t));
    if (!acc) {
        release(&b);
        return PyErr_NoMemory();
    }
    Py_ssize_t item = how.boundaries ? 1 : (Py_ssize_t)sizeof(int32_t);

    Py_BEGIN_ALLOW_THREADS;
    dense_frames(n, b.x.buf, b.weights.buf, inputs, filters, acc, &how, b.out.buf, item);
    Py_END_ALLOW_THREADS;

    free(acc);
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
    {"check_conv", check_conv, METH_VARARGS, check_conv_doc},
    {"conv", conv, METH_VARARGS, conv_doc},
    {"pooled", pooled, METH_VARARGS, pooled_doc},
    {"dense", dense, METH_VARARGS, dense_doc},
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
