"""A prepared TFDS split read as TFDS reads it, but parsed a block of records at a time.

TFDS parses each record alone (``tf.io.parse_single_example``, then its features' decoding,
one call per example: its reader's own TODO says batching would be faster). Per record that is
tens of microseconds, which a table of a million rows pays on every first pass: the
statistics, the first epoch, the evaluation. Here the same records, in the same order (TFDS's
own file reader, private API, so kept in this one module), are parsed ``BLOCK`` at a time with
``tf.io.parse_example`` and decoded with each feature's ``decode_batch_example``; the examples
that come out are TFDS's, value for value (a test compares them).

A dataset with a feature that cannot be parsed a block at a time (a shape with an unknown
dimension: audio, ragged sequences; nested features) is read by TFDS itself, as before.
"""

from __future__ import annotations

import weakref

TESTED_TFDS = "4.9"  # the version whose private reader this follows; another one is read by TFDS itself
BLOCK = 1024  # records parsed per call
_BLOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a dataset ``read`` returned -> its blocks


def read(builder, split: str, read_config):
    """``split`` of the prepared ``builder`` as a dataset of example dicts, in TFDS's order.

    Equivalent to ``builder.as_dataset(split, shuffle_files=False, read_config=read_config)`` but
    for TFDS's cache of a small dataset, which this never makes (the feed caches by ``data.cache``);
    ``batchable`` says which datasets are parsed in blocks.
    """
    import tensorflow as tf
    from tensorflow_datasets.core import reader

    info = builder.info
    if not batchable(info):
        return builder.as_dataset(split, shuffle_files=False, read_config=read_config)
    instructions = info.splits[split].file_instructions
    records = reader._read_files(file_instructions=instructions, read_config=read_config, shuffle_files=False,
                                 disable_shuffling=info.disable_shuffling, file_format=info.file_format)
    features, stored = info.features, info.features.get_serialized_info()
    specs = _specs(stored)
    # A feature stored as its value (numbers, text, class ids) decodes a block at once; one stored
    # encoded (an image's PNG bytes) is decoded example by example, inside the block's call.
    encoded = {n for n, f in features.items() if _info(f.get_tensor_info()) != _info(stored[n])}

    def decode(name, values):
        feature = features[name]
        if name not in encoded:
            return feature.decode_batch_example(tf.cast(values, stored[name].tf_dtype))
        out = feature.get_tensor_info()
        return tf.map_fn(feature.decode_example, values, fn_output_signature=tf.TensorSpec(out.shape, out.tf_dtype))

    @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops: nothing for autograph to rewrite
    def parse(serialized):
        return {n: decode(n, v) for n, v in tf.io.parse_example(serialized, specs).items()}

    blocks = records.batch(BLOCK).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = blocks.unbatch()
    if read_config.input_context is None:  # one worker's share of the files has no known count
        ds = ds.apply(tf.data.experimental.assert_cardinality(sum(f.take for f in instructions)))
    _BLOCKS[ds] = blocks
    return ds


def blocks_of(examples):
    """The blocks of parsed records that ``examples`` is, if ``read`` made it (else None).

    Splitting a block into examples costs per tensor of an example: a table of 300 columns pays it
    300 times a row, and again when a reader of its own gathers the examples into blocks
    (columns.blockwise; bench/README.md, wide tables). Such a reader takes the blocks instead.
    """
    return _BLOCKS.get(examples)


def tested_tfds() -> bool:
    """Whether the installed TFDS is ``TESTED_TFDS``, whose private API this module (and builders/local.py) follows."""
    import tensorflow_datasets as tfds

    return tfds.__version__.startswith(TESTED_TFDS + ".")


def batchable(info) -> bool:
    """Whether every feature of ``info`` is one flat tensor of a fixed shape (a block parses into one array)."""
    import tensorflow_datasets as tfds

    if not tested_tfds():
        return False
    try:
        serialized = info.features.get_serialized_info()
    except NotImplementedError:
        return False
    return all(isinstance(serialized.get(name), tfds.features.TensorInfo) and None not in serialized[name].shape
               for name in info.features)


def _specs(stored) -> dict:
    """The ``tf.io.parse_example`` specs of features stored as ``stored`` (TFDS's own)."""
    from tensorflow_datasets.core import example_parser

    return example_parser.ExampleParser(stored).flat_feature_specs


def _info(tensor_info) -> tuple:
    return tuple(tensor_info.shape), tensor_info.tf_dtype
