// config_io.h - a checkpoint's /config group (docs/formats.md, /config): one attribute per
// gpt-train option its table marks CONFIG_STORED (src/train/config.c), named as the option's
// config-file key; a repeatable option is a 1-D string dataset of that name instead.
#ifndef GT_CONFIG_IO_H
#define GT_CONFIG_IO_H

#include <hdf5.h>

#include "config.h"
#include "error.h"

// Writes every stored setting into loc (an unset string as ""). 0, or -1 with *e filled.
int config_write_attrs_e(hid_t loc, const TrainConfig *c, GtErr *e);
// Fills the settings that are CONFIG_RESUMED and NOT given on this command line from loc
// (a checkpoint's /config), so `--resume` alone continues with the settings of the run.
// A setting missing from loc (an older file) keeps its default.
void config_fill_from_attrs(TrainConfig *c, hid_t loc);

#endif
