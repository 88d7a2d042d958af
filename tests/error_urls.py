"""The portal's URLs plus one view that fails, to see the 500 page a real error produces."""

from django.urls import path

from legacyflo.urls import urlpatterns as portal_urlpatterns


def boom(request):
    raise RuntimeError("a bug in a view")


urlpatterns = [*portal_urlpatterns, path("boom/", boom)]
