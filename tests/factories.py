"""factory_boy factories for the curation models."""

import factory

from curation.models import Category, Dataset, Sample, SampleRevision


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category

    name = factory.Sequence(lambda n: f"Category {n}")
    slug = factory.Sequence(lambda n: f"category-{n}")
    position = "The model should be kind and careful."
    target_count = 10
    order = factory.Sequence(lambda n: n)


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    name = factory.Sequence(lambda n: f"Dataset {n}")
    kind = Dataset.Kind.VALUES_TARGETED


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


class SampleFactory(factory.django.DjangoModelFactory):
    """A sample with its first revision, as sample_create would make it."""

    class Meta:
        model = Sample

    dataset = factory.SubFactory(DatasetFactory)
    category = factory.SubFactory(CategoryFactory)
    question = factory.Sequence(lambda n: f"Question number {n}?")
    answer = factory.LazyFunction(lambda: words(60))

    @factory.post_generation
    def revision(obj, create, extracted, **kwargs):
        if create:
            SampleRevision.objects.create(
                sample=obj, number=obj.version, question=obj.question, answer=obj.answer,
                category=obj.category, author=obj.author,
            )
