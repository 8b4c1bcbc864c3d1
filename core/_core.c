/*
 * _core.c - the CPython binding of the anon_vma core: three functions, no state.
 *
 *   run(program_bytes, kernel, seed, check, memory_limit[, cpus, timing, inject]) -> dict
 *       (GIL released while it runs; with cpus, the walk trace is replayed on each CPU count)
 *   generations() -> list of dicts, one per row of the generation table
 *   struct_sizes() -> dict of the simulator's own object sizes (for memory estimates)
 *
 * core/runner.py checks types and shapes first; this file trusts that the program buffer is a
 * whole number of 24-byte ops. Errors map to core.errors.ProgramError, InvariantError and
 * MemoryError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

_Static_assert(sizeof(struct prog_op) == 32, "struct prog_op must match core.PROGRAM_DTYPE");

static PyObject *program_error;
static PyObject *invariant_error;

static int set_int(PyObject *d, const char *key, unsigned long long v)
{
	PyObject *o = PyLong_FromUnsignedLongLong(v);
	if (!o)
		return -1;
	int r = PyDict_SetItemString(d, key, o);
	Py_DECREF(o);
	return r;
}

static int set_float(PyObject *d, const char *key, double v)
{
	PyObject *o = PyFloat_FromDouble(v);
	if (!o)
		return -1;
	int r = PyDict_SetItemString(d, key, o);
	Py_DECREF(o);
	return r;
}

/* Nearest-rank percentile: the k-th smallest walk, k = ceil(num/den * walks). */
static uint64_t hist_rank(const struct sim *s, uint64_t num, uint64_t den)
{
	uint64_t walks = s->count.walks;
	if (!walks)
		return 0;
	uint64_t k = (num * walks + den - 1) / den, seen = 0;
	for (size_t e = 0; e < s->hist_len; e++) {
		seen += s->hist[e];
		if (seen >= k)
			return e;
	}
	return 0;
}

static PyObject *results_dict(const struct sim *s)
{
	const struct generation *g = s->gen;
	const struct sim_counters *c = &s->count;
	const struct sim_snapshot *snap = &s->snap;
	double walks = (double)c->walks;
	size_t max_e = 0;
	for (size_t e = 0; e < s->hist_len; e++)
		if (s->hist[e])
			max_e = e;

	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	/* The histogram as the bytes of an int64 array (core.run wraps them): a list of Python
	 * ints, then converted by numpy, cost more than the walks of a small scan. */
	size_t hist_n = c->walks ? max_e + 1 : 1;
	PyObject *hist = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(hist_n * sizeof(int64_t)));
	if (!hist)
		goto fail;
	int64_t *h = (int64_t *)PyBytes_AS_STRING(hist);
	for (size_t e = 0; e < hist_n; e++)
		h[e] = e < s->hist_len ? (int64_t)s->hist[e] : 0;
	int r = PyDict_SetItemString(d, "entries_hist", hist);
	Py_DECREF(hist);
	if (r)
		goto fail;

	if (set_int(d, "walks", c->walks) || set_int(d, "entries_total", c->entries) ||
	    set_int(d, "calls_total", c->calls) || set_int(d, "hits_total", c->hits) ||
	    set_float(d, "entries_mean", c->walks ? (double)c->entries / walks : NAN) ||
	    set_float(d, "calls_mean", c->walks ? (double)c->calls / walks : NAN) ||
	    set_float(d, "hits_mean", c->walks ? (double)c->hits / walks : NAN) ||
	    set_int(d, "entries_p50", hist_rank(s, 50, 100)) ||
	    set_int(d, "entries_p99", hist_rank(s, 99, 100)) ||
	    set_int(d, "entries_max", c->walks ? max_e : 0) ||
	    set_int(d, "processes", snap->processes) || set_int(d, "vmas", snap->vmas) ||
	    set_int(d, "anon_vmas", snap->anon_vmas) || set_int(d, "avcs", snap->avcs) ||
	    set_int(d, "pages", snap->pages) || set_int(d, "max_chain", snap->max_chain) ||
	    set_int(d, "chain_mismatches", snap->chain_mismatches) ||
	    set_int(d, "rmap_bytes", snap->anon_vmas * g->sizeof_anon_vma + snap->avcs * g->sizeof_avc) ||
	    set_int(d, "vma_bytes", snap->vmas * g->sizeof_vma) ||
	    set_int(d, "rmap_slab_bytes",
		    snap->anon_vmas * g->slab.anon_vma + snap->avcs * g->slab.avc) ||
	    set_int(d, "vma_slab_bytes", snap->vmas * g->slab.vma) ||
	    set_int(d, "faults", c->faults) || set_int(d, "cows", c->cows) ||
	    set_int(d, "reuses", c->reuses) || set_int(d, "forks", c->forks) ||
	    set_int(d, "exits", c->exits) || set_int(d, "peak_bytes", s->peak_bytes) ||
	    set_int(d, "injected", c->injected) || set_int(d, "faults_failed", c->faults_failed) ||
	    set_int(d, "forks_failed", c->forks_failed) ||
	    set_int(d, "ops_failed", c->ops_failed) || set_int(d, "ops_skipped", c->ops_skipped) ||
	    set_float(d, "sim_seconds", s->sim_seconds) ||
	    set_float(d, "scan_seconds", s->scan_seconds))
		goto fail;
	return d;
fail:
	Py_DECREF(d);
	return NULL;
}

/* The contention results, one list per metric, aligned with `cpus`. */
static PyObject *contention_dict(const struct contention *c, const uint32_t *cpus, size_t n)
{
	static const char *const keys[] = {
		"cpus", "scan_ns", "busy_ns", "spin_ns", "sleep_ns", "idle_ns", "wait_sum_ns",
		"wait_max_ns", "hold_sum_ns", "walks", "waited", "writers", "writer_wait_sum_ns",
		"contended",
	};
	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		PyObject *list = PyList_New((Py_ssize_t)n);
		if (!list) {
			Py_DECREF(d);
			return NULL;
		}
		for (size_t i = 0; i < n; i++) {
			const struct contention *r = &c[i];
			PyObject *o;
			switch (k) {
			case 0: o = PyLong_FromUnsignedLong(cpus[i]); break;
			case 1: o = PyFloat_FromDouble(r->scan_ns); break;
			case 2: o = PyFloat_FromDouble(r->busy_ns); break;
			case 3: o = PyFloat_FromDouble(r->spin_ns); break;
			case 4: o = PyFloat_FromDouble(r->sleep_ns); break;
			case 5: o = PyFloat_FromDouble(r->idle_ns); break;
			case 6: o = PyFloat_FromDouble(r->wait_sum_ns); break;
			case 7: o = PyFloat_FromDouble(r->wait_max_ns); break;
			case 8: o = PyFloat_FromDouble(r->hold_sum_ns); break;
			case 9: o = PyLong_FromUnsignedLongLong(r->walks); break;
			case 10: o = PyLong_FromUnsignedLongLong(r->waited); break;
			case 11: o = PyLong_FromUnsignedLongLong(r->writers); break;
			case 12: o = PyFloat_FromDouble(r->writer_wait_sum_ns); break;
			default: o = PyLong_FromUnsignedLongLong(r->contended); break;
			}
			if (!o) {
				Py_DECREF(list);
				Py_DECREF(d);
				return NULL;
			}
			PyList_SET_ITEM(list, (Py_ssize_t)i, o);
		}
		int err = PyDict_SetItemString(d, keys[k], list);
		Py_DECREF(list);
		if (err) {
			Py_DECREF(d);
			return NULL;
		}
	}
	return d;
}

/* CPU counts to replay the walk trace on; NULL and *n = 0 for None. -1 with an exception set. */
static int parse_cpus(PyObject *obj, uint32_t **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (obj == Py_None)
		return 0;
	PyObject *seq = PySequence_Fast(obj, "cpus must be a sequence of ints");
	if (!seq)
		return -1;
	size_t len = (size_t)PySequence_Fast_GET_SIZE(seq);
	uint32_t *cpus = malloc((len ? len : 1) * sizeof(uint32_t));
	if (!cpus) {
		Py_DECREF(seq);
		PyErr_NoMemory();
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned long v = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i));
		if (PyErr_Occurred() || v < 1 || v > 1u << 20) {
			PyErr_Clear();
			PyErr_SetString(PyExc_ValueError, "cpus must hold integers in 1..1048576");
			Py_DECREF(seq);
			free(cpus);
			return -1;
		}
		cpus[i] = (uint32_t)v;
	}
	Py_DECREF(seq);
	*out = cpus;
	*n = len;
	return 0;
}

static PyObject *core_run(PyObject *self, PyObject *args)
{
	(void)self;
	Py_buffer view;
	const char *kernel;
	unsigned long long seed, limit;
	int check;
	PyObject *cpus_obj = Py_None;
	struct timing tm = { 0 };
	unsigned int batch = 32;
	double fail_probability = 0.0;
	unsigned long long fail_at = 0, fail_seed = 0;
	if (!PyArg_ParseTuple(args, "y*sKpK|O(dddddddI)(dKK)", &view, &kernel, &seed, &check,
			      &limit, &cpus_obj, &tm.entry_ns, &tm.call_ns, &tm.hit_ns,
			      &tm.acquire_ns, &tm.release_ns, &tm.writer_interval_ns,
			      &tm.writer_hold_ns, &batch, &fail_probability, &fail_at, &fail_seed))
		return NULL;
	tm.batch = batch;

	PyObject *result = NULL;
	struct prog_op *ops = NULL;
	struct sim *s = NULL;
	uint32_t *cpus = NULL;
	struct contention *cont = NULL;
	size_t ncpus = 0;

	const struct generation *gen = generation_find(kernel);
	if (!gen || view.len % (Py_ssize_t)sizeof(struct prog_op)) {
		PyErr_Format(PyExc_ValueError, gen ? "program buffer is not a whole number of ops"
						   : "unknown kernel generation %s", kernel);
		goto out_release;
	}
	if (parse_cpus(cpus_obj, &cpus, &ncpus))
		goto out_release;
	/* A private copy: the caller's array may change while the GIL is released. */
	size_t nr_ops = (size_t)view.len / sizeof(struct prog_op);
	ops = malloc(nr_ops ? (size_t)view.len : 1);
	s = malloc(sizeof(*s));
	cont = calloc(ncpus ? ncpus : 1, sizeof(*cont));
	if (!ops || !s || !cont) {
		PyErr_NoMemory();
		goto out_release;
	}
	memcpy(ops, view.buf, (size_t)view.len);
	PyBuffer_Release(&view);

	sim_init(s, gen, seed, check, (size_t)limit);
	s->record_trace = cpus != NULL;
	s->inject.probability = fail_probability;
	s->inject.at = fail_at;
	s->inject.rng = fail_seed;
	int err;
	Py_BEGIN_ALLOW_THREADS
	err = sim_run_program(s, ops, nr_ops);
	for (size_t i = 0; !err && i < ncpus; i++)
		if (sim_contend(&s->trace, gen, &tm, cpus[i], &cont[i]))
			err = sim_fail(s, SIM_EOOM, "out of memory replaying the walk trace on %u CPUs",
				       cpus[i]);
	Py_END_ALLOW_THREADS

	if (err == SIM_EOOM)
		PyErr_SetString(PyExc_MemoryError, s->err.msg);
	else if (err == SIM_EBUG)
		PyErr_SetString(invariant_error, s->err.msg);
	else if (err)
		PyErr_SetString(program_error, s->err.msg);
	else
		result = results_dict(s);
	if (result && cpus) {
		PyObject *c = contention_dict(cont, cpus, ncpus);
		if (!c || PyDict_SetItemString(result, "contention", c))
			Py_CLEAR(result);
		Py_XDECREF(c);
	}
	sim_destroy(s);
	goto out;

out_release:
	PyBuffer_Release(&view);
out:
	free(ops);
	free(s);
	free(cpus);
	free(cont);
	return result;
}

static PyObject *core_generations(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	PyObject *list = PyList_New(0);
	if (!list)
		return NULL;
	for (size_t i = 0; i < sim_nr_generations; i++) {
		const struct generation *g = &sim_generations[i];
		PyObject *row = Py_BuildValue(
			"{s:s,s:s,s:O,s:O,s:s,s:O,s:s,s:s,s:O,s:i,s:i,s:i,s:i,s:i,s:i,s:s}",
			"name", g->name,
			"structure", rmap_structure_name(g->structure),
			"prepare_at_head", g->prepare_at_head ? Py_True : Py_False,
			"root", g->has_root ? Py_True : Py_False,
			"lock", rmap_lock_name(g->lock),
			"reclaim_trylock", g->reclaim_trylock ? Py_True : Py_False,
			"reuse", reuse_rule_name(g->reuse),
			"merge", merge_rule_name(g->merge),
			"vma_merge_extend", g->vma_merge_extend ? Py_True : Py_False,
			"sizeof_anon_vma", (int)g->sizeof_anon_vma,
			"sizeof_avc", (int)g->sizeof_avc,
			"sizeof_vma", (int)g->sizeof_vma,
			"slab_anon_vma", (int)g->slab.anon_vma,
			"slab_avc", (int)g->slab.avc,
			"slab_vma", (int)g->slab.vma,
			"source", g->source);
		if (!row || PyList_Append(list, row)) {
			Py_XDECREF(row);
			Py_DECREF(list);
			return NULL;
		}
		Py_DECREF(row);
	}
	return list;
}

static PyObject *core_struct_sizes(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n,s:n}",
			     "mm", (Py_ssize_t)sizeof(struct mm),
			     "vma", (Py_ssize_t)sizeof(struct vma),
			     "anon_vma", (Py_ssize_t)sizeof(struct anon_vma),
			     "anon_vma_chain", (Py_ssize_t)sizeof(struct anon_vma_chain),
			     "page", (Py_ssize_t)sizeof(struct page),
			     "pte", (Py_ssize_t)sizeof(pte_t),
			     "slot_index", (Py_ssize_t)sizeof(idx_t));
}

static PyMethodDef core_methods[] = {
	{"run", core_run, METH_VARARGS,
	 "run(program_bytes, kernel, seed, check, memory_limit[, cpus, timing]) -> dict "
	 "(use core.run)"},
	{"generations", core_generations, METH_NOARGS, "The generation table, one dict per row."},
	{"struct_sizes", core_struct_sizes, METH_NOARGS, "Bytes of the simulator's own objects."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT, "core._core", "The compiled anon_vma core.", -1, core_methods,
	NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
	PyObject *errors = PyImport_ImportModule("core.errors");
	if (!errors)
		return NULL;
	program_error = PyObject_GetAttrString(errors, "ProgramError");
	invariant_error = PyObject_GetAttrString(errors, "InvariantError");
	Py_DECREF(errors);
	if (!program_error || !invariant_error)
		return NULL;
	return PyModule_Create(&core_module);
}
