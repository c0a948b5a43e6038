// Function-pointer types shared by the generated tables and the driver (no ap_types include).
#ifndef TRIGGER_ML_APFIXED_REF_API_H
#define TRIGGER_ML_APFIXED_REF_API_H
#include <cstdint>
typedef uint64_t (*ref_assign_fn)(const char* hex);
typedef uint64_t (*ref_double_fn)(uint64_t bits);
#endif
