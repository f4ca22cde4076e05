"""``recommender``: user and item embeddings with biases, an optional MLP tower over side features.

prediction = head([user . item, user bias, item bias, tower(user, item, side features)])
With ``model.recommender.implicit`` (SVD++), the user vector also sums the implicit embeddings
of the items the user rated in training, scaled by 1/sqrt(their count).
The task head (a Dense(1) starting at the mean rating) combines the parts, and
L2 on the embeddings comes from ``regularization``. Besides ``serving_default``
(one rating per (user, item) row) the export carries ``recommend``: user ids
and k in, each user's k best-scoring items not rated in training out (fewer when a user of the
batch has fewer such items: the catalogue holds no more to recommend).
"""

from __future__ import annotations

import numpy as np

from pipeline.config import ExperimentConfig
from pipeline.models.blocks import dense_block
from pipeline.models.features import Encoded, encode, functional, lookup


def recommender(inputs, cfg: ExperimentConfig, spec, columns, reg, augmenter):
    from keras import layers

    rc = cfg.model.recommender
    users = lookup(spec.feature(rc.user), columns[rc.user], "int", cfg.features.max_vocabulary)
    items = lookup(spec.feature(rc.item), columns[rc.item], "int", cfg.features.max_vocabulary)
    u, i = users(inputs[rc.user]), items(inputs[rc.item])

    def embed(table, ids, size, name, regularizer):
        return layers.Embedding(table.vocabulary_size(), size, embeddings_regularizer=regularizer,
                                embeddings_initializer="zeros" if size == 1 else "uniform", name=name)(ids)

    user_vec = embed(users, u, rc.factors, "user_embedding", reg)
    if rc.implicit:  # SVD++: a user is also the items they chose to rate
        rated = _rated(np.asarray(users(columns[rc.user])), np.asarray(items(columns[rc.item])), users.vocabulary_size())
        implicit = _implicit(rated, items.vocabulary_size(), rc.factors, reg)
        user_vec = layers.Add(name="user_with_rated")([user_vec, implicit(u)])
    item_vec = embed(items, i, rc.factors, "item_embedding", reg)
    parts = [layers.Dot(axes=-1, name="affinity")([user_vec, item_vec]),
             embed(users, u, 1, "user_bias", reg), embed(items, i, 1, "item_bias", reg)]
    side = {n: x for n, x in inputs.items() if n not in (rc.user, rc.item)}
    encoded = encode(side, spec, cfg, columns, reg) if side else Encoded()
    if rc.tower:
        z = layers.Concatenate(name="tower_inputs")([user_vec, item_vec, *encoded.every_vector])
        for k, units in enumerate(rc.tower):
            z = dense_block(z, units, cfg.model, reg, name=f"tower{k + 1}")
        parts.append(z)
    else:
        parts.extend(encoded.every_vector)
    encoded.info[rc.user] = {"kind": "id", "vocabulary_size": users.vocabulary_size()}
    encoded.info[rc.item] = {"kind": "id", "vocabulary_size": items.vocabulary_size()}
    return layers.Concatenate(name="parts")(parts), encoded


def _rated(user_index: np.ndarray, item_index: np.ndarray, n_users: int):
    """Each user's distinct training items (item indices, with row splits by user index) and the
    user's weight 1/sqrt(their count) (SVD++); 0 for a user with none."""
    pairs = np.unique(np.stack([user_index, item_index], axis=1).astype(np.int64), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=n_users)
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    weights = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0).astype(np.float32)
    return pairs[:, 1], splits, weights


def _implicit(rated, n_items: int, factors: int, reg):
    """A layer: user index -> the weighted sum of the implicit embeddings of the items the user rated.

    Sums each distinct user of the batch once, over that user's items only: a training step costs
    its users' ratings, and ``recommend``, which asks for one user on every catalogue row, costs
    one user's, not the whole ratings matrix's.
    """
    import keras
    import tensorflow as tf

    items, splits, weights = rated

    class Implicit(keras.layers.Layer):
        def build(self, input_shape):
            self.embeddings = self.add_weight(shape=(n_items, factors), initializer="zeros", regularizer=reg,
                                              name="embeddings")

        def call(self, user):
            history = tf.RaggedTensor.from_row_splits(tf.constant(items), tf.constant(splits), validate=False)
            users, position = tf.unique(tf.reshape(user, [-1]))
            chosen = tf.gather(history, users)
            sums = tf.math.unsorted_segment_sum(tf.gather(self.embeddings, chosen.values), chosen.value_rowids(),
                                                tf.size(users))
            vectors = sums * tf.cast(tf.gather(weights, users), sums.dtype)[:, None]
            return tf.reshape(tf.gather(vectors, position), tf.concat([tf.shape(user), [factors]], 0))

        def compute_output_shape(self, input_shape):
            return (*input_shape, factors)

    return Implicit(name="rated_items")


def serving_signatures(model, cfg: ExperimentConfig, spec, columns: dict, task) -> dict:
    """``recommend(user_id: [batch], k: int32[]) -> item_ids [batch, k], scores float32[batch, k]``: ids as in the data."""
    import tensorflow as tf
    from keras import tree

    rc = cfg.model.recommender
    item_ids, first = np.unique(columns[rc.item], return_index=True)
    # Each item's side features as first seen in training: what the model scores it with; features of the
    # moment (model.recommender.context) at their latest training value, the model's now.
    catalogue = {rc.item: item_ids, **{f.name: (np.full(len(item_ids), np.max(columns[f.name])) if f.name in rc.context
                                                else columns[f.name][first])
                                       for f in spec.features if f.name not in (rc.user, rc.item)}}
    catalogue = {k: tf.constant(v) for k, v in catalogue.items()}
    users, seen = _seen_items(columns[rc.user], columns[rc.item], item_ids)
    # Each training user's row of ``seen``, by id: numbers or text (a hash table, where a sorted search needs numbers)
    rows = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(users, np.arange(len(users), dtype=np.int64)),
                                     default_value=-1)
    seen_t = tf.ragged.constant(seen, dtype=tf.int32)
    n_items = len(item_ids)
    user_dtype = tf.as_dtype(spec.feature(rc.user).dtype)

    items_part, scorer = _split(model, rc.user)

    def recommend(user_id, k):
        items = tree.flatten(items_part(catalogue, training=False))  # once a call

        def score_one(user):
            scores = tf.reshape(task.serve(scorer([tf.fill([n_items], user), *items], training=False))["prediction"],
                                [-1])
            pos = rows.lookup(user)
            rated = tf.cond(pos >= 0, lambda: seen_t[pos], lambda: tf.zeros([0], tf.int32))
            return tf.tensor_scatter_nd_update(scores, rated[:, None], tf.fill(tf.shape(rated), -np.inf))

        scores = tf.map_fn(score_one, user_id, fn_output_signature=tf.float32)
        unseen = tf.reduce_sum(tf.cast(scores > -np.inf, tf.int32), axis=1)  # per user
        top = tf.math.top_k(scores, k=tf.minimum(k, tf.minimum(n_items, tf.reduce_min(unseen))))
        return {"item_ids": tf.gather(catalogue[rc.item], top.indices), "scores": top.values}

    signature = [tf.TensorSpec([None], user_dtype, name="user_id"), tf.TensorSpec([], tf.int32, name="k")]
    recommend.tables = [rows]  # saved with the export (the model's own tables are found in the model)
    return {"recommend": (recommend, signature)}


def _split(model, user: str):
    """``model`` as two models sharing its layers: the part that does not depend on the ``user`` input
    (catalogue features in; out, the tensors that the operations on the user's side take from it), and
    the rest (``[user, *those tensors]`` in, the model's output out). ``recommend`` runs the first
    once a call and the rest for each user: the catalogue's lookups and encodings are not redone per user.
    """
    import keras
    from keras import tree

    user_input = model.input[user]
    follows = {id(user_input)}  # tensors computed from the user's input
    on_user_side = []
    for op in model.operations:  # layers and ops, in the order of the graph, inputs first
        if any(id(t) in follows for t in tree.flatten(op.input)):
            follows.update(id(t) for t in tree.flatten(op.output))
            on_user_side.append(op)
    taken = {id(t): t for op in on_user_side for t in tree.flatten(op.input) if id(t) not in follows}
    items = list(taken.values())
    catalogue = {name: x for name, x in model.input.items() if name != user}
    return functional(catalogue, items), keras.Model([user_input, *items], model.output)


def _seen_items(user_column, item_column, item_ids):
    """Sorted user ids and, per user, the catalogue indices of the items they rated in training."""
    order = np.argsort(user_column, kind="stable")
    users, starts = np.unique(user_column[order], return_index=True)
    index = np.searchsorted(item_ids, item_column[order]).astype(np.int32)
    return users, [list(part) for part in np.split(index, starts[1:])]


def evaluate(signatures: dict, model, data, cfg: ExperimentConfig, k: int = 10, relevant: float = 4.0) -> dict:
    """recall@k and NDCG@k on the test split (relevant items: rated >= ``relevant``).

    Scored for a seeded sample of ``model.recommender.ranking_users`` users, so the cost stays
    that of a few batches of ``recommend`` whatever the number of users. Uses the ``recommend``
    function the export serves, so the metric checks it too.
    """
    import tensorflow as tf

    from pipeline.export.saved_model import traced

    rc = cfg.model.recommender
    users, items = [], []
    for features, labels in data.test:
        keep = labels.numpy() >= relevant
        users.append(features[rc.user].numpy()[keep])
        items.append(features[rc.item].numpy()[keep])
    users, items = np.concatenate(users), np.concatenate(items)
    if not users.size:
        return {}
    chosen = np.unique(users)
    if 0 < rc.ranking_users < len(chosen):
        chosen = np.sort(np.random.default_rng(cfg.seed).choice(chosen, rc.ranking_users, replace=False))
    in_sample = np.isin(users, chosen)
    order = np.argsort(users[in_sample], kind="stable")
    grouped, starts = np.unique(users[in_sample][order], return_index=True)
    liked = dict(zip(grouped.tolist(), (set(part.tolist()) for part in np.split(items[in_sample][order], starts[1:]))))
    recommend = traced(*signatures["recommend"])  # the graph the export serves: one trace, whatever the batch
    recall, ndcg = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for start in range(0, len(chosen), 256):
        batch = chosen[start:start + 256]
        top = recommend(tf.constant(batch), tf.constant(k, tf.int32))["item_ids"].numpy()
        for user, ranked in zip(batch.tolist(), top.tolist()):
            hits = np.array([item in liked[user] for item in ranked], dtype=float)
            recall.append(hits.sum() / len(liked[user]))
            ideal = discounts[: min(len(liked[user]), k)].sum()
            ndcg.append(float((hits * discounts[: len(hits)]).sum() / ideal))
    return {f"test_recall_at_{k}": float(np.mean(recall)), f"test_ndcg_at_{k}": float(np.mean(ndcg)),
            "test_ranking_users": len(chosen)}
