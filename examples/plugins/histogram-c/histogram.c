// A sluice plugin in C: a latency histogram with fixed buckets.
//
// Outputs one cumulative count per configured upper bound (`le_500`: values
// at or below 500, as Prometheus histograms count) and the total. Buckets
// are fixed by the config, so windows merge by adding counts, exactly.
//
// Interface 0.2 (wit/v0.2/aggregator.wit): one aggregation keeps the states
// of every window the host has open, in a vector indexed by the group
// number the host gives each window (small numbers, reused once released),
// and each call names the groups it is for.
//
// Bindings come from `wit-bindgen c` (aggregator_plugin.h); the generated
// code hands every argument over to us (we free it) and frees what we
// return after the host has read it (we allocate it with malloc).
// scripts/common.sh (build_language_plugin c) builds it.

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator_plugin.h"

// The snapshot format is the one the 0.1 version of this plugin wrote, so a
// checkpoint taken with it restores here: same layout, same version.
#define STATE_VERSION 1
#define MAX_BOUNDS 64

typedef exports_sluice_plugin_aggregator_aggregation_t aggregation_t;
typedef aggregator_plugin_list_u32_t group_list_t;

// One window's counts: values in each bucket (not cumulative), and all
// values (those above the last bound are in no bucket). Laid out as the
// snapshot is: `total`, then one count per bound, each a little-endian u64
// (wasm32 is little-endian, so a snapshot is a copy of the struct).
typedef struct {
    uint64_t total;
    uint64_t buckets[];  // one per configured bound
} counts_t;

// The configured bucket bounds, strictly increasing, and each bound as the
// config wrote it (output names use it: no printf, whose stdio would make
// the module import WASI); then the windows' states.
struct exports_sluice_plugin_aggregator_aggregation_t {
    size_t bounds_len;
    double bounds[MAX_BOUNDS];
    char text[MAX_BOUNDS][32];
    // groups[g] is group g's counts, NULL while the group is empty.
    counts_t **groups;
    size_t groups_len;
};

static const char DEFAULT_CONFIG[] = "{\"bounds\": [100, 250, 500, 1000, 2500, 5000, 10000]}";

// malloc that never returns NULL: running out of memory traps, and the host
// reopens the plugin and rebuilds its windows.
static void *xmalloc(size_t size) {
    void *p = malloc(size > 0 ? size : 1);
    if (!p) abort();
    return p;
}

void exports_sluice_plugin_aggregator_info(exports_sluice_plugin_aggregator_plugin_info_t *ret) {
    aggregator_plugin_string_dup(&ret->name, "histogram");
    aggregator_plugin_string_dup(&ret->version, "0.2.0");
    aggregator_plugin_string_dup(&ret->description,
                                 "Cumulative counts of the values at or below each of a fixed list of "
                                 "bucket bounds (Prometheus-style `le` buckets), and the total.");
    ret->state_version = STATE_VERSION;
    ret->mergeable = true;
    ret->commutative = true;
    aggregator_plugin_string_dup(&ret->config_help,
                                 "{\"bounds\": [100, 250, 500, 1000, 2500, 5000, 10000]} (the default): "
                                 "increasing finite upper bounds, at most 64");
}

// ---------------------------------------------------------------------------
// The config: `{}` or `{"bounds": [numbers]}`, nothing else.

static const char *skip_space(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

// Parses the config into `agg`; on failure returns a message (static text).
static const char *parse_config(const char *p, const char *end, aggregation_t *agg) {
    p = skip_space(p, end);
    if (p == end || *p++ != '{') return "config must be a JSON object";
    p = skip_space(p, end);
    if (p < end && *p == '}') {
        p = skip_space(p + 1, end);
        return p == end ? NULL : "config: unexpected text after the object";
    }
    static const char key[] = "\"bounds\"";
    if ((size_t)(end - p) < sizeof key - 1 || memcmp(p, key, sizeof key - 1) != 0) {
        // Name the key that was given (up to its closing quote, or 40 bytes).
        static char message[96];
        const char *name = p < end && *p == '"' ? p + 1 : p;
        size_t n = 0;
        while (name + n < end && n < 40 && name[n] != '"') n++;
        memcpy(message, "unknown key `", 13);
        memcpy(message + 13, name, n);
        memcpy(message + 13 + n, "` (expected `bounds`)", 22);
        return message;
    }
    p = skip_space(p + sizeof key - 1, end);
    if (p == end || *p++ != ':') return "bounds: expected `:`";
    p = skip_space(p, end);
    if (p == end || *p++ != '[') return "bounds: must be a list of numbers";
    agg->bounds_len = 0;
    p = skip_space(p, end);
    if (p < end && *p == ']') return "bounds: must not be empty";
    for (;;) {
        // strtod needs a terminated string: copy one number out.
        char *number = agg->text[agg->bounds_len < MAX_BOUNDS ? agg->bounds_len : MAX_BOUNDS - 1];
        size_t n = 0;
        while (p < end && n < sizeof agg->text[0] - 1 && strchr("+-0123456789.eE", *p)) number[n++] = *p++;
        number[n] = '\0';
        char *stop;
        double bound = strtod(number, &stop);
        if (n == 0 || *stop != '\0' || !isfinite(bound)) return "bounds: must be a list of finite numbers";
        if (agg->bounds_len == MAX_BOUNDS) return "bounds: at most 64";
        if (agg->bounds_len > 0 && bound <= agg->bounds[agg->bounds_len - 1])
            return "bounds: must be strictly increasing";
        agg->bounds[agg->bounds_len++] = bound;
        p = skip_space(p, end);
        if (p < end && *p == ',') {
            p = skip_space(p + 1, end);
            continue;
        }
        if (p < end && *p == ']') break;
        return "bounds: expected `,` or `]`";
    }
    p = skip_space(p + 1, end);
    if (p == end || *p++ != '}') return "unknown key in config after `bounds` (only `bounds` is taken)";
    p = skip_space(p, end);
    return p == end ? NULL : "config: unexpected text after the object";
}

bool exports_sluice_plugin_aggregator_static_aggregation_open(
    aggregator_plugin_string_t *config, exports_sluice_plugin_aggregator_own_aggregation_t *ret,
    aggregator_plugin_string_t *err) {
    aggregation_t *agg = calloc(1, sizeof *agg);
    const char *text = (const char *)config->ptr;
    const char *problem = agg ? parse_config(text, text + config->len, agg) : "out of memory";
    // `{}` leaves bounds_len at 0: the defaults.
    if (agg && !problem && agg->bounds_len == 0)
        problem = parse_config(DEFAULT_CONFIG, DEFAULT_CONFIG + sizeof DEFAULT_CONFIG - 1, agg);
    aggregator_plugin_string_free(config);
    if (problem) {
        free(agg);
        aggregator_plugin_string_dup(err, problem);
        return false;
    }
    *ret = exports_sluice_plugin_aggregator_aggregation_new(agg);
    return true;
}

void exports_sluice_plugin_aggregator_aggregation_destructor(aggregation_t *rep) {
    for (size_t g = 0; g < rep->groups_len; g++) free(rep->groups[g]);
    free(rep->groups);
    free(rep);
}

// `prefix` then `number`, into `out` (size 64). For names (`le_500`,
// `le_0.25`, `le_m10` for -10, `le_1e6`), which allow only [a-z0-9_.],
// `as_name` turns `-` into `m`, drops `+` and lowers `E`.
static void join(char *out, const char *prefix, const char *number, bool as_name) {
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    for (const char *c = number; *c && n < 63; c++) {
        if (!as_name) out[n++] = *c;
        else if (*c == '-') out[n++] = 'm';
        else if (*c == 'E') out[n++] = 'e';
        else if (*c != '+') out[n++] = *c;
    }
    out[n] = '\0';
}

// One input: the number a pipeline's `field:` binds.
void exports_sluice_plugin_aggregator_method_aggregation_inputs(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self,
    exports_sluice_plugin_aggregator_list_input_spec_t *ret) {
    (void)self;
    exports_sluice_plugin_aggregator_input_spec_t *spec = xmalloc(sizeof *spec);
    aggregator_plugin_string_dup(&spec->name, "value");
    spec->kind = SLUICE_PLUGIN_TYPES_INPUT_KIND_FLOAT;
    spec->optional = false;
    aggregator_plugin_string_dup(&spec->description, "the values to count into buckets");
    ret->ptr = spec;
    ret->len = 1;
}

void exports_sluice_plugin_aggregator_method_aggregation_outputs(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self,
    exports_sluice_plugin_aggregator_list_output_spec_t *ret) {
    size_t len = self->bounds_len + 1;
    exports_sluice_plugin_aggregator_output_spec_t *specs = xmalloc(len * sizeof *specs);
    for (size_t i = 0; i < self->bounds_len; i++) {
        char name[64], description[64];
        join(name, "le_", self->text[i], true);
        join(description, "values at or below ", self->text[i], false);
        aggregator_plugin_string_dup(&specs[i].name, name);
        specs[i].kind = SLUICE_PLUGIN_TYPES_OUTPUT_KIND_INTEGER;
        aggregator_plugin_string_dup(&specs[i].description, description);
    }
    aggregator_plugin_string_dup(&specs[len - 1].name, "count");
    specs[len - 1].kind = SLUICE_PLUGIN_TYPES_OUTPUT_KIND_INTEGER;
    aggregator_plugin_string_dup(&specs[len - 1].description, "all values");
    ret->ptr = specs;
    ret->len = len;
}

// ---------------------------------------------------------------------------
// The windows' states.

// Bytes of one window's counts (and of its snapshot).
static size_t counts_size(const aggregation_t *agg) { return (agg->bounds_len + 1) * sizeof(uint64_t); }

// Group `group`'s counts, or NULL when the group is empty.
static counts_t *find(const aggregation_t *agg, uint32_t group) {
    return group < agg->groups_len ? agg->groups[group] : NULL;
}

// Group `group`'s counts, created (zero) the first time the group is named.
static counts_t *state(aggregation_t *agg, uint32_t group) {
    if (group >= agg->groups_len) {
        // Grow the vector to hold the group, at least doubling it.
        size_t len = agg->groups_len * 2 > (size_t)group + 1 ? agg->groups_len * 2 : (size_t)group + 1;
        counts_t **groups = realloc(agg->groups, len * sizeof *groups);
        if (!groups) abort();
        memset(groups + agg->groups_len, 0, (len - agg->groups_len) * sizeof *groups);
        agg->groups = groups;
        agg->groups_len = len;
    }
    if (!agg->groups[group]) {
        agg->groups[group] = calloc(1, counts_size(agg));
        if (!agg->groups[group]) abort();
    }
    return agg->groups[group];
}

// Empties group `group`, freeing its counts.
static void drop(aggregation_t *agg, uint32_t group) {
    if (group < agg->groups_len) {
        free(agg->groups[group]);
        agg->groups[group] = NULL;
    }
}

// Whether row `row` has a value: bit `row % 8` of byte `row / 8` of the
// validity bitmap. An empty bitmap means every row has one (always so for
// a required input).
static bool present(const aggregator_plugin_list_u8_t *validity, size_t row) {
    return validity->len == 0 || (row / 8 < validity->len && (validity->ptr[row / 8] >> (row % 8)) & 1);
}

// Row i of `batch` goes to group `batch->groups.ptr[i]`; column 0 holds the
// declared input, `value`. Rows of different groups may interleave.
void exports_sluice_plugin_aggregator_method_aggregation_update(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self, exports_sluice_plugin_aggregator_rows_t *batch) {
    const sluice_plugin_types_column_t *column = batch->columns.len > 0 ? &batch->columns.ptr[0] : NULL;
    // The host sends the declared kind; anything else is not ours to count.
    if (column && column->values.tag == SLUICE_PLUGIN_TYPES_COLUMN_VALUES_FLOAT) {
        const double *values = column->values.val.float_.ptr;
        size_t rows = batch->groups.len < column->values.val.float_.len ? batch->groups.len
                                                                          : column->values.val.float_.len;
        const double *bounds = self->bounds;
        size_t len = self->bounds_len;
        // Rows of one window come in arrival order, but windows may
        // interleave: fold each run of one group's rows (the host usually
        // sends a window's rows together) with one lookup of its counts.
        for (size_t start = 0, end; start < rows; start = end) {
            uint32_t group = batch->groups.ptr[start];
            for (end = start + 1; end < rows && batch->groups.ptr[end] == group; end++) {
            }
            counts_t *counts = state(self, group);
            for (size_t i = start; i < end; i++) {
                if (!present(&column->validity, i)) continue;  // a missing value is not counted
                // Bounds are few: a linear scan beats a binary search here.
                size_t b = 0;
                while (b < len && values[i] > bounds[b]) b++;
                if (b < len) counts->buckets[b]++;
                counts->total++;
            }
        }
    }
    exports_sluice_plugin_aggregator_rows_free(batch);
}

// Folds group from[i] into group into[i]; the `from` groups stay as they are.
bool exports_sluice_plugin_aggregator_method_aggregation_merge(exports_sluice_plugin_aggregator_borrow_aggregation_t self,
                                                               group_list_t *into, group_list_t *from,
                                                               aggregator_plugin_string_t *err) {
    const char *problem = NULL;
    for (size_t i = 0; i < into->len && i < from->len; i++) {
        if (into->ptr[i] == from->ptr[i]) {
            problem = "cannot merge a group into itself";
            break;
        }
        const counts_t *other = find(self, from->ptr[i]);
        if (!other) continue;  // an empty group adds nothing
        counts_t *counts = state(self, into->ptr[i]);
        for (size_t b = 0; b < self->bounds_len; b++) counts->buckets[b] += other->buckets[b];
        counts->total += other->total;
    }
    aggregator_plugin_list_u32_free(into);
    aggregator_plugin_list_u32_free(from);
    if (problem) {
        aggregator_plugin_string_dup(err, problem);
        return false;
    }
    return true;
}

// One integer column per output (`le_N` for each bound, then `count`), with
// one value per group asked for.
void exports_sluice_plugin_aggregator_method_aggregation_evaluate(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self, group_list_t *groups,
    exports_sluice_plugin_aggregator_list_output_values_t *ret) {
    size_t outputs = self->bounds_len + 1, n = groups->len;
    exports_sluice_plugin_aggregator_output_values_t *columns = xmalloc(outputs * sizeof *columns);
    for (size_t o = 0; o < outputs; o++) {
        columns[o].tag = SLUICE_PLUGIN_TYPES_OUTPUT_VALUES_INTEGER;
        columns[o].val.integer.ptr = xmalloc(n * sizeof(aggregator_plugin_option_s64_t));
        columns[o].val.integer.len = n;
    }
    for (size_t g = 0; g < n; g++) {
        const counts_t *counts = find(self, groups->ptr[g]);
        uint64_t running = 0;
        for (size_t b = 0; b < self->bounds_len; b++) {
            running += counts ? counts->buckets[b] : 0;
            columns[b].val.integer.ptr[g] = (aggregator_plugin_option_s64_t){.is_some = true, .val = (int64_t)running};
        }
        columns[outputs - 1].val.integer.ptr[g] =
            (aggregator_plugin_option_s64_t){.is_some = true, .val = counts ? (int64_t)counts->total : 0};
    }
    aggregator_plugin_list_u32_free(groups);
    ret->ptr = columns;
    ret->len = outputs;
}

// Each group's counts as bytes; an empty group's are zeros, which restore
// to an empty group.
void exports_sluice_plugin_aggregator_method_aggregation_snapshot(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self, group_list_t *groups,
    aggregator_plugin_list_list_u8_t *ret) {
    size_t size = counts_size(self), n = groups->len;
    aggregator_plugin_list_u8_t *states = xmalloc(n * sizeof *states);
    for (size_t g = 0; g < n; g++) {
        const counts_t *counts = find(self, groups->ptr[g]);
        states[g].ptr = xmalloc(size);
        states[g].len = size;
        if (counts) memcpy(states[g].ptr, counts, size);
        else memset(states[g].ptr, 0, size);
    }
    aggregator_plugin_list_u32_free(groups);
    ret->ptr = states;
    ret->len = n;
}

// Sets each group to its snapshot. A group whose snapshot cannot be read is
// left empty and named in the error list; the others are restored.
bool exports_sluice_plugin_aggregator_method_aggregation_restore(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self, group_list_t *groups,
    aggregator_plugin_list_list_u8_t *states, uint32_t state_version,
    exports_sluice_plugin_aggregator_list_group_error_t *err) {
    size_t n = groups->len < states->len ? groups->len : states->len, refused = 0;
    exports_sluice_plugin_aggregator_group_error_t *errors = NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t group = groups->ptr[i];
        const char *problem = NULL;
        if (state_version != STATE_VERSION) problem = "unknown state version (this plugin writes version 1)";
        else if (states->ptr[i].len != counts_size(self))
            problem = "state does not match the configured number of buckets";
        if (problem) {
            drop(self, group);
            if (!errors) errors = xmalloc(n * sizeof *errors);
            errors[refused].group = group;
            aggregator_plugin_string_dup(&errors[refused].message, problem);
            refused++;
            continue;
        }
        memcpy(state(self, group), states->ptr[i].ptr, counts_size(self));
    }
    aggregator_plugin_list_u32_free(groups);
    aggregator_plugin_list_list_u8_free(states);
    if (refused > 0) {
        err->ptr = errors;
        err->len = refused;
        return false;
    }
    return true;
}

// The host is done with these windows; it may name new ones by the same numbers.
void exports_sluice_plugin_aggregator_method_aggregation_release(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self, group_list_t *groups) {
    for (size_t g = 0; g < groups->len; g++) drop(self, groups->ptr[g]);
    aggregator_plugin_list_u32_free(groups);
}
