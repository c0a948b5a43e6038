// Reference conversions through the real Xilinx ap_fixed headers (shipped with hls4ml).
//
// ref_assign<S, D>: build an S from its raw bits (hex), then `D d = s;`
//   (ap_fixed_base<...>::operator= between two different types), return d's raw bits.
// ref_double<D>:    `D d = x;` for a double given by its IEEE-754 bits
//   (ap_fixed_base(double)), return d's raw bits.
// Destinations are at most 64 bits wide; sources may be wider (multi-word ap_private).
#ifndef TRIGGER_ML_APFIXED_REF_COMMON_H
#define TRIGGER_ML_APFIXED_REF_COMMON_H

#include <cstdint>
#include <cstring>

#include "ap_fixed.h"
#include "ref_api.h"

inline unsigned ref_hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

template <class S, int W2>
inline void ref_set_bits(S& s, const char* hex) {
  ap_uint<W2> v = 0;
  for (const char* p = hex; *p; ++p) {
    v <<= 4;
    v |= ap_uint<W2>(ref_hexval(*p));
  }
  s.range(W2 - 1, 0) = v;
}

// Source types are plain ap_fixed / ap_ufixed (their own Q/O modes play no role in
// the conversion); W2 is repeated as a template argument for ref_set_bits.
template <class S, int W2, class D>
uint64_t ref_assign(const char* hex) {
  S s;
  ref_set_bits<S, W2>(s, hex);
  D d;
  d = s;  // different types: ap_fixed_base::operator=(const ap_fixed_base<W2,...>&)
  return d.bits_to_uint64();
}

template <class D>
uint64_t ref_double(uint64_t bits) {
  double x;
  std::memcpy(&x, &bits, sizeof x);
  D d = x;  // ap_fixed_base(double)
  return d.bits_to_uint64();
}

#endif
