/*
 * The book checksum (OKX's: CRC32, signed, of the top 25 levels interleaved
 * "bidP:bidQ:askP:askQ:...") and the decimal-string helpers it depends on. Expected values
 * come from outside client.js: Node's zlib, and numbers computed in Python with zlib.crc32
 * (equal to the gateway's own checksum function for the same books).
 */
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const zlib = require("node:zlib");
const { crc32, bookChecksum, compareDecimal, isZero } = require("../client.js");
const { referenceChecksum } = require("../testing/fakes.js");

/** Signed CRC32 of each string's UTF-8 bytes, from Python's zlib.crc32. */
const PYTHON_CRC32 = {
  "": 0,
  hello: 907060870,
  "64000.1:0.5:64000.2:1.25": 1763129460,
  "ünïcode €": 1227251691,
  "3366.1:7:3366.8:9:3366:6:3368:8": -1881014294,
};

test("crc32 is zlib's CRC32 of the UTF-8 bytes, as a signed 32-bit integer", () => {
  for (const [text, expected] of Object.entries(PYTHON_CRC32)) {
    assert.equal(crc32(text), expected, JSON.stringify(text));
    assert.equal(crc32(text), zlib.crc32(text) | 0, JSON.stringify(text));
  }
});

test("bookChecksum interleaves bid and ask levels (OKX's documented example)", () => {
  const bids = [["3366.1", "7"], ["3366", "6"]];
  const asks = [["3366.8", "9"], ["3368", "8"]];
  assert.equal(bookChecksum(bids, asks), -1881014294);
});

test("bookChecksum takes the top 25 levels; a shorter side just ends", () => {
  // 30 bids and 12 asks: the gateway's checksum of this book is 765687386.
  const bids = Array.from({ length: 30 }, (_, i) => [`${100 - i}.${i % 10}`, `${i + 1}.00${i}`]);
  const asks = Array.from({ length: 12 }, (_, i) => [`${101 + i}.5`, "0.1"]);
  assert.equal(bookChecksum(bids, asks), 765687386);
  assert.equal(bookChecksum(bids, asks), referenceChecksum(bids, asks));
  assert.equal(bookChecksum(bids.slice(0, 25), asks), 765687386, "levels 26+ do not count");
  assert.equal(bookChecksum([["1.0", "2"]], [["1.5", "3"], ["1.6", "4"], ["1.7", "5"]]), 905235236);
  assert.equal(bookChecksum([], []), 0);
});

test("bookChecksum is over the strings as sent: 0.010 is not 0.01", () => {
  assert.notEqual(bookChecksum([["1.5", "0.010"]], []), bookChecksum([["1.5", "0.01"]], []));
});

test("compareDecimal orders decimal strings by value, exactly", () => {
  const cases = [
    ["9.5", "10.1", -1],
    ["10.1", "9.5", 1],
    ["1.50", "1.5", 0],
    ["0.1", "0.10000000000000001", -1], // equal as floats
    ["007.2", "7.2", 0],
    ["64000", "64000.0001", -1],
  ];
  for (const [a, b, expected] of cases) assert.equal(compareDecimal(a, b), expected, `${a} ? ${b}`);
});

test("isZero accepts every spelling of zero and nothing else", () => {
  for (const text of ["0", "0.0", "0.000", "-0", "+0.00", ".0"]) {
    assert.equal(isZero(text), true, text);
  }
  for (const text of ["", "1", "0.001", "10", "0e1x"]) assert.equal(isZero(text), false, text);
});
