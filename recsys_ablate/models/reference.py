"""Strong simple models fitted on the same split as the two-tower ones: most-popular, EASE and iALS.

Reproducibility studies (Dacrema et al. 2019; Rendle et al. 2020; Anelli et
al. 2022) found well-tuned simple models matching neural recommenders on
MovieLens; these set the two-tower family's numbers beside them. Each is one
registered class with its grid of settings (chosen on validation,
`training/references.py`) and is scored like a two-tower model: a query
vector per user (`query_tower`, reading only the user) against a vector per
item (`candidate_embeddings`), so the same evaluation code ranks its items
over the same users with the same masking.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import tensorflow as tf

from recsys_ablate.errors import UserInputError

REFERENCES: dict[str, type["ReferenceModel"]] = {}


def register(cls):
    REFERENCES[cls.name] = cls
    return cls


def interactions(data) -> scipy.sparse.csr_matrix:
    """[users, items] 1 where the user rated the item in training (repeats counted once)."""
    rows = data.train
    matrix = scipy.sparse.csr_matrix((np.ones(len(rows), np.float32), (data.user[rows], data.movie[rows])),
                                     shape=(data.num_users, data.num_movies))
    matrix.data[:] = 1.0
    return matrix


class _QueryTower:
    """A user's query vector, looked up like a two-tower query tower that reads only the user."""

    input_keys = ("user",)

    def __init__(self, vectors):
        self.vectors = vectors

    def __call__(self, inputs):
        return tf.constant(self.vectors(np.asarray(inputs["user"])), tf.float32)


class ReferenceModel:
    """A fitted reference model. Subclasses set `name` and `grid` (settings tried, chosen on validation)
    and implement `fit`, which sets `user_vectors` (function of user rows) and `item_vectors`."""

    name: str
    grid: tuple[dict, ...] = ({},)

    def __init__(self, **settings):
        self.settings = settings

    def fit(self, data) -> "ReferenceModel":
        raise NotImplementedError

    @property
    def query_tower(self):
        return _QueryTower(self.user_vectors)

    def candidate_embeddings(self) -> tf.Tensor:
        return tf.constant(self.item_vectors, tf.float32)


@register
class Popularity(ReferenceModel):
    """Most popular: every user gets the items with the most training ratings."""

    name = "popularity"

    def fit(self, data) -> "Popularity":
        counts = np.asarray(interactions(data).sum(axis=0)).ravel()
        self.item_vectors = counts[:, None].astype(np.float32)
        self.user_vectors = lambda users: np.ones((len(users), 1), np.float32)
        return self


@register
class Ease(ReferenceModel):
    """EASE (Steck, WWW 2019): item-item weights B = I - P / diag(P), P = (XᵀX + λI)⁻¹, in closed form;
    a user's scores are their training row times B. λ is chosen on validation from the grid."""

    name = "ease"
    # Wide enough that ML-1M's choice is inside it under both protocols (bench/references.py: 500 under
    # recbole, 3000 or more under tfrs, where seen items are ranked).
    grid = tuple({"l2": l2} for l2 in (50.0, 200.0, 500.0, 1000.0, 3000.0, 10000.0, 30000.0))

    def fit(self, data) -> "Ease":
        matrix = interactions(data)
        gram = (matrix.T @ matrix).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.settings["l2"]
        precision = np.linalg.inv(gram)
        weights = -precision / np.diag(precision)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        self.item_vectors = weights.T.astype(np.float32)  # item i's vector: column i of B
        self.user_vectors = lambda users: matrix[users].toarray()
        return self


@register
class Ials(ReferenceModel):
    """iALS (Hu, Koren and Volinsky 2008) from the `implicit` package: confidence 1 + alpha on each
    training rating, 15 alternating least-squares iterations, seeded; factors, regularisation and alpha
    chosen on validation from the grid."""

    name = "ials"
    # Confidence alpha matters most on ML-1M (1 best under recbole, 10 under tfrs: bench/references.py), the
    # regularisation little.
    grid = tuple({"factors": 64, "regularization": r, "alpha": a}
                 for r in (0.01, 1.0) for a in (0.3, 1.0, 3.0, 10.0, 30.0))

    def fit(self, data) -> "Ials":
        try:  # an optional extra, imported where it is used (threadpoolctl comes with it)
            import threadpoolctl
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError:
            raise UserInputError("--reference_models ials needs the implicit package: "
                                 'pip install -e ".[ials]"') from None
        # implicit's own threads solve the least squares; BLAS's would compete with them (implicit checks,
        # and warns, when the model is made).
        with threadpoolctl.threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=self.settings["factors"],
                                            regularization=self.settings["regularization"],
                                            alpha=self.settings["alpha"], iterations=15, random_state=0)
            model.fit(interactions(data), show_progress=False)
        self.item_vectors = np.asarray(model.item_factors, np.float32)
        factors = np.asarray(model.user_factors, np.float32)
        self.user_vectors = lambda users: factors[users]
        return self
