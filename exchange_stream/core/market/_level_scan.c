/* The per-level loops of a book, compiled: reading a side's levels off a book line, the
 * update between two published sides, and the checksum text of the top levels.
 *
 * Each function here has its definition in Python (level_scan.py says which), which is
 * what runs when this module is not built; tests/test_market_level_scan.py compares the two
 * on random input. These loops are what is left of a book's cost in CPython (a few
 * C-level passes of hundreds of instructions a level); here a level costs tens.
 *
 * Only ASCII level texts are read: anything else (an escape, a sign, an exponent, other
 * spaces, a number beyond the symbol's limits, levels out of order, a crossed book) makes
 * read_sides answer None, and the general path reads the line and says what is wrong.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define LONGEST_TEXT 64 /* spellings.LONGEST_TEXT: a longer number text is refused */
#define CHECKSUM_LEVELS 25 /* depth.CHECKSUM_LEVELS */

/* A number's canonical spelling, as spans of the line: the digits before the point
 * ("0" when there are none) and after it, without its trailing zeros. */
typedef struct {
    const char *whole;
    Py_ssize_t whole_length;
    const char *fraction;
    Py_ssize_t fraction_length;
} Number;

static int is_zero(const Number *number)
{
    return number->whole_length == 1 && number->whole[0] == '0' && number->fraction_length == 0;
}

/* -1, 0 or 1 as a is less than, equal to or greater than b (both canonical). */
static int compare(const Number *a, const Number *b)
{
    if (a->whole_length != b->whole_length) {
        return a->whole_length < b->whole_length ? -1 : 1;
    }
    int order = memcmp(a->whole, b->whole, (size_t)a->whole_length);
    if (order != 0) {
        return order < 0 ? -1 : 1;
    }
    Py_ssize_t shorter = a->fraction_length < b->fraction_length ? a->fraction_length
                                                                  : b->fraction_length;
    order = memcmp(a->fraction, b->fraction, (size_t)shorter);
    if (order != 0) {
        return order < 0 ? -1 : 1;
    }
    return (a->fraction_length > b->fraction_length) - (a->fraction_length < b->fraction_length);
}

/* Read the quoted plain decimal at text[*at] (its opening quote) before end, as
 * spellings.canonical_text does; moves *at past its closing quote. 0 when read, -1 when it
 * is not such a number or is beyond the limits. */
static int read_number(const char *text, Py_ssize_t *at, Py_ssize_t end, Py_ssize_t integer_digits,
                       Py_ssize_t places, Number *number)
{
    Py_ssize_t index = *at;
    if (index >= end || text[index] != '"') {
        return -1;
    }
    Py_ssize_t begin = ++index, point = -1;
    while (index < end && text[index] != '"') {
        char c = text[index];
        if (c == '.') {
            if (point >= 0) {
                return -1;
            }
            point = index;
        } else if (c < '0' || c > '9') {
            return -1;
        }
        index++;
    }
    if (index >= end) {
        return -1; /* no closing quote */
    }
    Py_ssize_t stop = index;
    Py_ssize_t length = stop - begin;
    if (length > LONGEST_TEXT || length - (point >= 0) == 0) {
        return -1; /* too long, or no digit ("", ".") */
    }
    const char *whole = text + begin;
    Py_ssize_t whole_length = (point >= 0 ? point : stop) - begin;
    while (whole_length > 0 && whole[0] == '0') {
        whole++;
        whole_length--;
    }
    if (whole_length == 0) {
        whole = "0";
        whole_length = 1;
    }
    const char *fraction = point >= 0 ? text + point + 1 : text + stop;
    Py_ssize_t fraction_length = point >= 0 ? stop - point - 1 : 0;
    while (fraction_length > 0 && fraction[fraction_length - 1] == '0') {
        fraction_length--;
    }
    if (whole_length > integer_digits || fraction_length > places) {
        return -1;
    }
    number->whole = whole;
    number->whole_length = whole_length;
    number->fraction = fraction;
    number->fraction_length = fraction_length;
    *at = stop + 1;
    return 0;
}

static Py_ssize_t spelled_length(const Number *number)
{
    return number->whole_length + (number->fraction_length ? 1 + number->fraction_length : 0);
}

static char *spell(char *out, const Number *number)
{
    memcpy(out, number->whole, (size_t)number->whole_length);
    out += number->whole_length;
    if (number->fraction_length) {
        *out++ = '.';
        memcpy(out, number->fraction, (size_t)number->fraction_length);
        out += number->fraction_length;
    }
    return out;
}

/* The level's JSON text as the encoder writes it: ["64000.1","1.5"]. */
static PyObject *level_text(const Number *price, const Number *quantity)
{
    Py_ssize_t length = 7 + spelled_length(price) + spelled_length(quantity);
    PyObject *text = PyUnicode_New(length, 127);
    if (text == NULL) {
        return NULL;
    }
    char *out = (char *)PyUnicode_1BYTE_DATA(text);
    *out++ = '[';
    *out++ = '"';
    out = spell(out, price);
    memcpy(out, "\",\"", 3);
    out = spell(out + 3, quantity);
    *out++ = '"';
    *out = ']';
    return text;
}

static int skip(const char *text, Py_ssize_t *at, Py_ssize_t end, const char *expected)
{
    size_t length = strlen(expected);
    if (end - *at < (Py_ssize_t)length || memcmp(text + *at, expected, length) != 0) {
        return -1;
    }
    *at += (Py_ssize_t)length;
    return 0;
}

/* skip() of expected, then of one space if there is one. */
static int skip_spaced(const char *text, Py_ssize_t *at, Py_ssize_t end, const char *expected)
{
    if (skip(text, at, end, expected) < 0) {
        return -1;
    }
    if (*at < end && text[*at] == ' ') {
        ++*at;
    }
    return 0;
}

/* The levels of the side text[start:end] (between its "[[" and "]]"), best first
 * (descending: the bids): a list of level texts, those of quantity zero left out, with the
 * side's best price in *best; Py_None (a new reference) when the side is not levels this
 * path takes (written otherwise, beyond the limits, a price zero, not strictly best first). */
static PyObject *read_side(const char *text, Py_ssize_t start, Py_ssize_t end, int descending,
                           Py_ssize_t integer_digits, Py_ssize_t places, Number *best)
{
    PyObject *levels = PyList_New(0);
    if (levels == NULL) {
        return NULL;
    }
    Number price, quantity, last = {NULL, 0, NULL, 0};
    Py_ssize_t at = start;
    int first = 1;
    for (;;) {
        if (read_number(text, &at, end, integer_digits, places, &price) < 0
            || skip_spaced(text, &at, end, ",") < 0
            || read_number(text, &at, end, integer_digits, places, &quantity) < 0
            || is_zero(&price)) {
            goto not_taken;
        }
        if (first) {
            *best = price;
            first = 0;
        } else if (compare(&last, &price) != (descending ? 1 : -1)) {
            goto not_taken;
        }
        last = price;
        if (!is_zero(&quantity)) {
            PyObject *level = level_text(&price, &quantity);
            if (level == NULL || PyList_Append(levels, level) < 0) {
                Py_XDECREF(level);
                Py_DECREF(levels);
                return NULL;
            }
            Py_DECREF(level);
        }
        if (at == end) {
            return levels;
        }
        if (skip_spaced(text, &at, end, "],[") < 0 && skip_spaced(text, &at, end, "], [") < 0) {
            goto not_taken;
        }
    }
not_taken:
    Py_DECREF(levels);
    Py_RETURN_NONE;
}

static PyObject *as_tuple(PyObject *list)
{
    PyObject *tuple = PyList_AsTuple(list);
    Py_DECREF(list);
    return tuple;
}

PyDoc_STRVAR(read_sides_doc,
             "read_sides(line, bids_start, bids_end, asks_start, asks_end, integer_digits, "
             "places)\n--\n\n"
             "The level texts of a book line's two sides (each the text between its '[[' and "
             "']]'), best first, those of quantity zero left out; None unless every level is "
             "two quoted plain decimals within the limits, the price not zero, each side "
             "strictly best first and the book not crossed.");

static PyObject *read_sides(PyObject *module, PyObject *const *args, Py_ssize_t count)
{
    (void)module;
    Py_ssize_t bounds[4], integer_digits, places;
    if (count != 7 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "read_sides(line: str, 4 bounds: int, integer_digits: int, places: int)");
        return NULL;
    }
    for (int index = 0; index < 4; index++) {
        bounds[index] = PyLong_AsSsize_t(args[1 + index]);
        if (bounds[index] == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    /* A limit beyond what a Py_ssize_t holds is no limit: clamped, as the Python reads it. */
    integer_digits = PyNumber_AsSsize_t(args[5], NULL);
    if (integer_digits == -1 && PyErr_Occurred()) {
        return NULL;
    }
    places = PyNumber_AsSsize_t(args[6], NULL);
    if (places == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *line = args[0];
    if (!PyUnicode_IS_ASCII(line)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(line);
    for (int side = 0; side < 4; side += 2) {
        if (bounds[side] < 0 || bounds[side] > bounds[side + 1] || bounds[side + 1] > length) {
            PyErr_SetString(PyExc_ValueError, "a side's bounds are not within the line");
            return NULL;
        }
    }
    const char *text = (const char *)PyUnicode_1BYTE_DATA(line);
    Number best_bid, best_ask;
    PyObject *bids = read_side(text, bounds[0], bounds[1], 1, integer_digits, places, &best_bid);
    if (bids == NULL || bids == Py_None) {
        return bids;
    }
    PyObject *asks = read_side(text, bounds[2], bounds[3], 0, integer_digits, places, &best_ask);
    if (asks == NULL || asks == Py_None) {
        Py_DECREF(bids);
        return asks;
    }
    if (compare(&best_bid, &best_ask) >= 0) {
        Py_DECREF(bids);
        Py_DECREF(asks);
        Py_RETURN_NONE; /* crossed */
    }
    PyObject *bid_texts = as_tuple(bids), *ask_texts = as_tuple(asks);
    if (bid_texts == NULL || ask_texts == NULL) {
        Py_XDECREF(bid_texts);
        Py_XDECREF(ask_texts);
        return NULL;
    }
    PyObject *sides = PyTuple_Pack(2, bid_texts, ask_texts);
    Py_DECREF(bid_texts);
    Py_DECREF(ask_texts);
    return sides;
}

/* A level text read: its price as a number (to compare) and as written, its quantity as
 * written. */
typedef struct {
    Number price;
    const char *price_text;
    Py_ssize_t price_length;
    const char *quantity;
    Py_ssize_t quantity_length;
} Level;

/* Read a level text ["64000.1","1.5"], ASCII; -1 with ValueError set when it is not one.
 * Level texts are canonical (read_sides, best_first and level_texts_of write them so), and
 * the price is compared as the digits before and after its point; leading zeros before it
 * and trailing ones after it are skipped, and none before it reads as "0". Two spellings of
 * one price are therefore one level here, where the Python definition would count two. */
static int read_level(PyObject *text_object, Level *level)
{
    if (!PyUnicode_Check(text_object) || !PyUnicode_IS_ASCII(text_object)) {
        PyErr_SetString(PyExc_ValueError, "a level text must be an ASCII str");
        return -1;
    }
    const char *text = (const char *)PyUnicode_1BYTE_DATA(text_object);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text_object);
    const char *end = text + length;
    const char *close = NULL;
    if (length >= 8 && memcmp(text, "[\"", 2) == 0) {
        close = memchr(text + 2, '"', (size_t)(length - 2));
    }
    if (close == NULL || close == text + 2 || end - close < 6 || memcmp(close, "\",\"", 3) != 0
        || memcmp(end - 2, "\"]", 2) != 0) {
        PyErr_SetString(PyExc_ValueError, "a level text must read [\"price\",\"quantity\"]");
        return -1;
    }
    const char *point = memchr(text + 2, '.', (size_t)(close - text - 2));
    Number *price = &level->price;
    price->whole = text + 2;
    price->whole_length = (point ? point : close) - price->whole;
    while (price->whole_length > 1 && price->whole[0] == '0') {
        price->whole++;
        price->whole_length--;
    }
    if (price->whole_length == 0) {
        price->whole = "0";
        price->whole_length = 1;
    }
    price->fraction = point ? point + 1 : close;
    price->fraction_length = point ? close - point - 1 : 0;
    while (price->fraction_length > 0 && price->fraction[price->fraction_length - 1] == '0') {
        price->fraction_length--;
    }
    level->price_text = text + 2;
    level->price_length = close - (text + 2);
    level->quantity = close + 3;
    level->quantity_length = end - 2 - level->quantity;
    return 0;
}

/* The text of a level gone, its price as the level wrote it: ["64000.1","0"]. */
static PyObject *gone_text(const Level *level)
{
    PyObject *text = PyUnicode_New(level->price_length + 8, 127);
    if (text == NULL) {
        return NULL;
    }
    char *out = (char *)PyUnicode_1BYTE_DATA(text);
    memcpy(out, "[\"", 2);
    memcpy(out + 2, level->price_text, (size_t)level->price_length);
    memcpy(out + 2 + level->price_length, "\",\"0\"]", 6);
    return text;
}

PyDoc_STRVAR(side_update_doc,
             "side_update(old, new, descending)\n--\n\n"
             "The levels changed between two tuples of a side's level texts, each strictly best "
             "first: the new texts of the levels added or changed and ['price','0'] for each "
             "price gone, best first.");

static PyObject *side_update(PyObject *module, PyObject *const *args, Py_ssize_t count)
{
    (void)module;
    if (count != 3 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "side_update(old: tuple, new: tuple, descending: bool)");
        return NULL;
    }
    PyObject *old = args[0], *new = args[1];
    int descending = PyObject_IsTrue(args[2]);
    if (descending < 0) {
        return NULL;
    }
    int better = descending ? 1 : -1; /* compare(old, new) when the old level comes first */
    Py_ssize_t old_count = PyTuple_GET_SIZE(old), new_count = PyTuple_GET_SIZE(new);
    Py_ssize_t old_at = 0, new_at = 0;
    PyObject *update = PyList_New(0);
    if (update == NULL) {
        return NULL;
    }
    Level old_level, new_level;
    if ((old_count && read_level(PyTuple_GET_ITEM(old, 0), &old_level) < 0)
        || (new_count && read_level(PyTuple_GET_ITEM(new, 0), &new_level) < 0)) {
        goto failed;
    }
    while (old_at < old_count || new_at < new_count) {
        int order = old_at == old_count   ? -better
                    : new_at == new_count ? better
                                          : compare(&old_level.price, &new_level.price);
        PyObject *changed = NULL;
        if (order == better) {
            changed = gone_text(&old_level); /* the old level comes first: gone */
            if (changed == NULL) {
                goto failed;
            }
        } else if (order != 0 || old_level.quantity_length != new_level.quantity_length
                   || memcmp(old_level.quantity, new_level.quantity,
                             (size_t)new_level.quantity_length) != 0) {
            changed = PyTuple_GET_ITEM(new, new_at); /* added, or at another quantity */
            Py_INCREF(changed);
        }
        if (changed != NULL) {
            int appended = PyList_Append(update, changed);
            Py_DECREF(changed);
            if (appended < 0) {
                goto failed;
            }
        }
        if (order != -better && ++old_at < old_count
            && read_level(PyTuple_GET_ITEM(old, old_at), &old_level) < 0) {
            goto failed;
        }
        if (order != better && ++new_at < new_count
            && read_level(PyTuple_GET_ITEM(new, new_at), &new_level) < 0) {
            goto failed;
        }
    }
    return update;
failed:
    Py_DECREF(update);
    return NULL;
}

PyDoc_STRVAR(checksum_text_doc,
             "checksum_text(bids, asks)\n--\n\n"
             "OKX's checksum text of two tuples of level texts: the top 25 levels, bid and ask "
             "interleaved, 'bid1p:bid1q:ask1p:ask1q:bid2p:...' (when one side is shorter, the "
             "other just goes on).");

static PyObject *checksum_text(PyObject *module, PyObject *const *args, Py_ssize_t count)
{
    (void)module;
    if (count != 2 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "checksum_text(bids: tuple, asks: tuple)");
        return NULL;
    }
    Level levels[2 * CHECKSUM_LEVELS];
    Py_ssize_t taken = 0, length = 0;
    Py_ssize_t bids = PyTuple_GET_SIZE(args[0]), asks = PyTuple_GET_SIZE(args[1]);
    for (Py_ssize_t index = 0; index < CHECKSUM_LEVELS; index++) {
        for (int side = 0; side < 2; side++) {
            if (index >= (side ? asks : bids)) {
                continue;
            }
            Level *level = &levels[taken++];
            if (read_level(PyTuple_GET_ITEM(args[side], index), level) < 0) {
                return NULL;
            }
            length += level->price_length + 1 + level->quantity_length + 1;
        }
    }
    PyObject *text = PyUnicode_New(length ? length - 1 : 0, 127); /* no ':' after the last */
    if (text == NULL) {
        return NULL;
    }
    char *out = (char *)PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t index = 0; index < taken; index++) {
        const Level *level = &levels[index];
        if (index) {
            *out++ = ':';
        }
        memcpy(out, level->price_text, (size_t)level->price_length);
        out += level->price_length;
        *out++ = ':';
        memcpy(out, level->quantity, (size_t)level->quantity_length);
        out += level->quantity_length;
    }
    return text;
}

static PyMethodDef methods[] = {
    {"read_sides", (PyCFunction)(void (*)(void))read_sides, METH_FASTCALL, read_sides_doc},
    {"side_update", (PyCFunction)(void (*)(void))side_update, METH_FASTCALL, side_update_doc},
    {"checksum_text", (PyCFunction)(void (*)(void))checksum_text, METH_FASTCALL, checksum_text_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_level_scan",
    "A book's per-level loops, compiled (definitions: exchange_stream.core.market.level_scan).",
    0,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__level_scan(void)
{
    return PyModuleDef_Init(&module);
}
