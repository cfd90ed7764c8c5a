/*
 * The hot loop of spikefleet.events.binning: packed EVENT_DTYPE records (x i16,
 * y i16, t i64, p bool; 13 bytes, no padding) counted straight into the open
 * windows' int64 count buffers, in two passes over the packet and no
 * temporary arrays. binning.py owns the semantics and does the same in numpy
 * when this module is not built; tests/events check the two agree.
 *
 * scan() checks every event against the sensor and finds the time range of the
 * events the crop keeps; binning.py then sizes the buffers and checks its
 * limits before count() writes anything. Buffer lengths are checked here too.
 * The GIL is released while a loop runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RECORD 13

typedef struct {
    int16_t x, y;
    int64_t t;
    uint8_t p;
} Event;

static inline Event
read_event(const uint8_t *at)
{
    Event e;
    memcpy(&e.x, at, 2);
    memcpy(&e.y, at + 2, 2);
    memcpy(&e.t, at + 4, 8);
    e.p = at[12];
    return e;
}

/* scan(events, width, height, row, col) -> (first_bad, kept, tmin, tmax)
 * first_bad: index of the first event outside width x height, or -1 (then the
 * rest is meaningless); kept: events inside the crop (row + col >= 0). */
static PyObject *
scan(PyObject *self, PyObject *args)
{
    Py_buffer events, row, col;
    Py_ssize_t width, height;
    if (!PyArg_ParseTuple(args, "y*nny*y*", &events, &width, &height, &row, &col))
        return NULL;
    PyObject *result = NULL;
    if (events.len % RECORD || row.len != height * 4 || col.len != width * 4) {
        PyErr_SetString(PyExc_ValueError, "scan: buffer sizes do not match");
        goto done;
    }
    Py_ssize_t n = events.len / RECORD, bad = -1, kept = 0;
    int64_t tmin = INT64_MAX, tmax = INT64_MIN;
    const uint8_t *data = events.buf;
    const int32_t *rows = row.buf, *cols = col.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Event e = read_event(data + i * RECORD);
        if ((uint16_t)e.x >= width || (uint16_t)e.y >= height) {
            bad = i;
            break;
        }
        if ((int64_t)rows[e.y] + cols[e.x] < 0)
            continue;
        kept++;
        if (e.t < tmin)
            tmin = e.t;
        if (e.t > tmax)
            tmax = e.t;
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("nnLL", bad, kept, (long long)tmin, (long long)tmax);
done:
    PyBuffer_Release(&events);
    PyBuffer_Release(&row);
    PyBuffer_Release(&col);
    return result;
}

/* count(events, row, col, channel_step, origin, window, first, lo_t, hi_t, out, size)
 *   -> (late, after)
 * Adds each kept event with lo_t <= t < hi_t to out[(k - first) * size + pixel],
 * k = (t - origin) // window; binning.py guarantees every such k - first is
 * below len(out) / size (it sized out from scan's tmax), and it is checked. */
static PyObject *
count(PyObject *self, PyObject *args)
{
    Py_buffer events, row, col, out;
    Py_ssize_t channel_step, size;
    long long origin, window, first, lo_t, hi_t;
    if (!PyArg_ParseTuple(args, "y*y*y*nLLLLLw*n", &events, &row, &col, &channel_step, &origin,
                          &window, &first, &lo_t, &hi_t, &out, &size))
        return NULL;
    PyObject *result = NULL;
    if (events.len % RECORD || out.len % 8 || size <= 0 || window <= 0 || first < 0 ||
        out.len / 8 % size) {
        PyErr_SetString(PyExc_ValueError, "count: buffer sizes do not match");
        goto done;
    }
    Py_ssize_t n = events.len / RECORD, windows = out.len / 8 / size, late = 0, after = 0;
    Py_ssize_t outside = 0;
    const uint8_t *data = events.buf;
    const int32_t *rows = row.buf, *cols = col.buf;
    int64_t *counts = out.buf;
    /* Events come in time order, so most share the previous one's window: keep its
     * offset range and divide only when an event leaves it. */
    uint64_t base = 1, k_abs = 0;
    const uint64_t span = (uint64_t)window;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Event e = read_event(data + i * RECORD);
        int64_t pixel = (int64_t)rows[e.y] + cols[e.x];
        if (pixel < 0)
            continue;
        if (e.t < lo_t) {
            late++;
            continue;
        }
        if (e.t >= hi_t) {
            after++;
            continue;
        }
        /* t >= lo_t >= origin: the difference is exact as unsigned */
        uint64_t offset = (uint64_t)e.t - (uint64_t)origin;
        if (offset - base >= span || base == 1) {
            k_abs = offset / span;
            base = k_abs * span;
        }
        uint64_t k = k_abs - (uint64_t)first;
        if (k >= (uint64_t)windows) {
            outside++;
            continue;
        }
        pixel += e.p ? channel_step : 0;
        counts[k * size + pixel]++;
    }
    Py_END_ALLOW_THREADS
    if (outside)
        PyErr_Format(PyExc_ValueError, "count: %zd events beyond the open windows", outside);
    else
        result = Py_BuildValue("nn", late, after);
done:
    PyBuffer_Release(&events);
    PyBuffer_Release(&row);
    PyBuffer_Release(&col);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Check events against the sensor; time range of kept ones."},
    {"count", count, METH_VARARGS, "Count events into open time windows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_binning", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__binning(void)
{
    return PyModule_Create(&module);
}
