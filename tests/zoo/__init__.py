"""Models people copy from keras-io, small: for the model-coverage tests."""

import keras
import numpy as np
from _tf import tf
from keras import layers, ops


class CustomStep(keras.Model):
    """A subclassed model with its own `train_step` (unbuilt until its first batch)."""

    def __init__(self):
        super().__init__(name="custom_step")
        self.hidden = layers.Dense(8, activation="relu", name="hidden")
        self.out = layers.Dense(3, name="out")

    def call(self, x):
        return self.out(self.hidden(x))

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=pred)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def two_heads():
    """An image classifier with a second, regression head (dict outputs)."""
    inp = keras.Input((8, 8, 1), name="img")
    h = layers.Flatten()(layers.Conv2D(4, 3, activation="relu", name="conv")(inp))
    model = keras.Model(inp, {"digit": layers.Dense(10, activation="softmax", name="digit")(h),
                              "size": layers.Dense(1, name="size")(h)}, name="two_heads")
    model.compile("adam", {"digit": "sparse_categorical_crossentropy", "size": "mse"})
    return model


class TransformerBlock(layers.Layer):
    """keras-io's text-classification Transformer block."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"),
                                     layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs, training=False):
        attn = self.dropout1(self.att(inputs, inputs), training=training)
        out1 = self.layernorm1(inputs + attn)
        return self.layernorm2(out1 + self.dropout2(self.ffn(out1), training=training))


class TokenAndPositionEmbedding(layers.Layer):
    """keras-io's token + position embedding: two Embeddings in a custom layer."""

    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        positions = self.pos_emb(ops.arange(start=0, stop=ops.shape(x)[-1], step=1))
        return self.token_emb(x) + positions


def transformer(maxlen=12, vocab=50):
    """keras-io's "Text classification with Transformer", small."""
    inputs = layers.Input(shape=(maxlen,))  # float32 ids, as in the example
    x = TokenAndPositionEmbedding(maxlen, vocab, 16, name="embedding")(inputs)
    x = TransformerBlock(16, 2, 16, name="block")(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dense(8, activation="relu")(layers.Dropout(0.1)(x))
    outputs = layers.Dense(2, activation="softmax", name="classes")(x)
    model = keras.Model(inputs=inputs, outputs=outputs, name="transformer")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def structured():
    """keras-io's structured-data classifier: dict inputs, numbers and strings,
    lookups inside the model."""
    age, chol = keras.Input((1,), name="age"), keras.Input((1,), name="chol")
    thal = keras.Input((1,), name="thal", dtype="string")
    sex = keras.Input((1,), name="sex", dtype="int64")
    t = layers.StringLookup(vocabulary=["fixed", "normal", "reversible"],
                            output_mode="one_hot", name="thal_lookup")(thal)
    s = layers.IntegerLookup(vocabulary=[0, 1], output_mode="one_hot", name="sex_lookup")(sex)
    x = layers.Dense(8, activation="relu", name="hidden")(
        layers.concatenate([age, chol, t, s], name="features"))
    model = keras.Model({"age": age, "chol": chol, "thal": thal, "sex": sex},
                        layers.Dense(1, activation="sigmoid", name="score")(x), name="structured")
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    return model


def structured_data(n=64, seed=0):
    """A batched `tf.data.Dataset` for `structured()` (keras fits strings from datasets)."""
    rng = np.random.default_rng(seed)
    x = {"age": rng.normal(size=(n, 1)).astype("float32"),
         "chol": rng.normal(size=(n, 1)).astype("float32"),
         "thal": rng.choice(["fixed", "normal", "reversible"], size=(n, 1)),
         "sex": rng.integers(0, 2, size=(n, 1))}
    y = (x["age"][:, 0] > 0).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


class GAN(keras.Model):
    """keras-io's "customizing what happens in fit" GAN: `compile()` takes two
    optimizers and a loss function, `train_step` of its own, no compiled
    loss, no `call()`."""

    def __init__(self, discriminator, generator, latent_dim):
        super().__init__(name="gan")
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.seed_generator = keras.random.SeedGenerator(1337)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer, self.g_optimizer, self.loss_fn = d_optimizer, g_optimizer, loss_fn

    def train_step(self, real_images):
        if isinstance(real_images, tuple):
            real_images = real_images[0]
        batch = tf.shape(real_images)[0]
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        combined = tf.concat([self.generator(z), real_images], axis=0)
        labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(combined))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((batch, 1)), self.discriminator(self.generator(z)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}


def gan(latent_dim=8):
    """A small GAN on 8x8x1 images, compiled as in the keras-io guide."""
    disc = keras.Sequential([keras.Input((8, 8, 1)),
                             layers.Conv2D(4, 3, activation="relu", name="conv"),
                             layers.GlobalMaxPooling2D(), layers.Dense(1, name="logit")],
                            name="discriminator")
    gen = keras.Sequential([keras.Input((latent_dim,)),
                            layers.Dense(64, activation="sigmoid", name="pixels"),
                            layers.Reshape((8, 8, 1))], name="generator")
    model = GAN(disc, gen, latent_dim)
    model.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3),
                  keras.losses.BinaryCrossentropy(from_logits=True))
    return model


WORDS = ["good", "bad", "great", "awful", "fine", "movie", "plot", "the", "a", "was"]


def reviews(n=64, seed=0):
    """Raw-text reviews (a numpy str array) and whether each holds a good word."""
    rng = np.random.default_rng(seed)
    texts = np.array([" ".join(rng.choice(WORDS, 6)) for _ in range(n)])
    return texts, np.array([int("good" in t.split() or "great" in t.split()) for t in texts])


def text_classifier(texts, length=8):
    """keras-io's raw-text classifier: `TextVectorization` inside the model,
    then `Embedding`, pooling and a softmax."""
    vectorizer = layers.TextVectorization(max_tokens=20, output_sequence_length=length,
                                          name="vectorizer")
    vectorizer.adapt(texts)
    inp = keras.Input((), dtype="string", name="text")
    h = layers.Embedding(20, 4, name="embedding")(vectorizer(inp))
    out = layers.Dense(2, activation="softmax", name="out")(layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inp, out, name="text_classifier")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
