"""Image collections on disk: a folder of class sub-folders, or a flat folder."""

from pathlib import Path

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
    ".pgm",
)


def _images_in(folder):
    return sorted(
        str(p) for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def load_image_folder(folder):
    """List the images of ``folder`` and their labels.

    Two layouts are understood: torchvision's ``ImageFolder`` (one sub-folder
    per class, ``folder/cat/001.png``; the label is the sub-folder's name) and
    a flat folder of images (no labels).

    Parameters
    ----------
    folder : str or path-like
        The folder.

    Returns
    -------
    paths : list of str
        Image file paths, sorted by class then name.
    labels : list of str or None
        The class of each image, or None for a flat folder.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for cls in ("cat", "dog"):
    ...     (root / cls).mkdir()
    ...     Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / cls / "a.png")
    >>> paths, labels = load_image_folder(root)
    >>> labels
    ['cat', 'dog']
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"No folder at {str(root)!r}.")
    classes = sorted(p.name for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for cls in classes:
        found = _images_in(root / cls)
        paths += found
        labels += [cls] * len(found)
    if paths:
        return paths, labels
    paths = _images_in(root)
    if not paths:
        raise ValueError(
            f"No images found in {str(root)!r} (nor in its sub-folders); looked "
            f"for {', '.join(IMAGE_EXTENSIONS)} files. Use one sub-folder per class "
            "(folder/cat/1.png) or a flat folder of images."
        )
    return paths, None


def load_digits_transfer(images=False, random_state=0):
    """A transfer-learning task that ships offline: digits -> odd vs even.

    scikit-learn's ``load_digits`` split in two disjoint, stratified halves:
    the source task is the ten digit classes of one half; the target task is
    a new one, odd (1) vs even (0), on the other half.

    Parameters
    ----------
    images : bool, default=False
        False: rows of 64 pixels in [0, 1] (float64). True: 8x8 grayscale
        images in [0, 1], shape (n, 8, 8), float32.
    random_state : int, default=0
        Seeds the split.

    Returns
    -------
    X_source, y_source, X_target, y_target : ndarrays
        ``y_source`` are digits 0-9; ``y_target`` is 1 for odd digits.

    Examples
    --------
    >>> X_src, y_src, X_tgt, y_tgt = load_digits_transfer()
    >>> X_src.shape, sorted(set(y_tgt.tolist()))
    ((898, 64), [0, 1])
    """
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    if images:
        X = X.reshape(-1, 8, 8).astype(np.float32)
    X_src, X_tgt, y_src, y_tgt = train_test_split(
        X, y, test_size=0.5, random_state=random_state, stratify=y
    )
    return X_src, y_src, X_tgt, y_tgt % 2


def sample_per_class(y, n_per_class, random_state=None):
    """Indices of ``n_per_class`` random samples of each class, and of the rest.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    n_per_class : int
        Samples to draw from each class (without replacement).
    random_state : int, RandomState instance or None, default=None
        Seeds the draw.

    Returns
    -------
    labelled, rest : ndarray of int
        Indices of the drawn samples, and of all the others.

    Examples
    --------
    >>> labelled, rest = sample_per_class([0, 0, 0, 1, 1, 1], 2, random_state=0)
    >>> len(labelled), len(rest)
    (4, 2)
    """
    import numpy as np
    from sklearn.utils import check_random_state

    y = np.asarray(y)
    rng = check_random_state(random_state)
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < n_per_class:
        raise ValueError(
            f"n_per_class={n_per_class}, but class {classes[counts.argmin()]!r} "
            f"has only {counts.min()} samples."
        )
    labelled = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), n_per_class, replace=False)
         for c in classes]
    )
    return labelled, np.setdiff1d(np.arange(len(y)), labelled)
