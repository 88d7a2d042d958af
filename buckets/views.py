from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts.access import get_owned_or_404, tenant_view
from accounts.models import Role
from buckets import services
from buckets.forms import BucketForm, CredentialsForm, RoleForm
from buckets.models import AuthMode, Bucket
from buckets.policy import policies_for, trust_policy


@tenant_view(read=Role.VIEWER)
def bucket_list(request):
    buckets = Bucket.objects.for_tenant(request.access.tenant)
    return render(request, "buckets/list.html", {"buckets": buckets})


@sensitive_post_parameters("secret_access_key")
@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
def bucket_register(request):
    form = BucketForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            bucket = services.bucket_register(
                tenant=request.access.tenant, actor=request.user, name=data["name"], region=data["region"],
                endpoint_url=data["endpoint_url"] or "", purpose=data["purpose"], auth_mode=data["auth_mode"],
                access_key_id=data["access_key_id"], secret_access_key=data["secret_access_key"],
                role_arn=data["role_arn"], request=request,
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            if bucket.status == "verified":
                messages.success(request, f"{bucket.name} is registered and verified.")
            else:
                messages.error(request, f"{bucket.name} is registered but failed verification: see the checks below.")
            return redirect("buckets:detail", tenant_slug=request.access.tenant.slug, bucket_uuid=bucket.uuid)
    return render(request, "buckets/register.html", {
        "form": form, "regions": BucketForm.regions(), "external_id": request.access.tenant.aws_external_id,
        "trust_policy": trust_policy(principal=settings.LEGACYFLO_AWS_PRINCIPAL_ARN,
                                     external_id=request.access.tenant.aws_external_id),
    })


@tenant_view(read=Role.VIEWER)
def bucket_detail(request, bucket_uuid):
    bucket = get_owned_or_404(request.access, Bucket, uuid=bucket_uuid)
    uses_role = bucket.auth_mode == AuthMode.ROLE
    policies = policies_for(bucket.name, purpose=bucket.purpose, uses_role=uses_role, role_arn=bucket.role_arn,
                            principal=settings.LEGACYFLO_AWS_PRINCIPAL_ARN,
                            external_id=request.access.tenant.aws_external_id)
    if uses_role and not request.access.is_admin:
        policies = policies[1:]  # the trust policy (with the ExternalId) is for the tenant's admins
    return render(request, "buckets/detail.html", {
        "bucket": bucket, "policies": policies, "uses_role": uses_role,
        "credentials_form": CredentialsForm(), "role_form": RoleForm(initial={"role_arn": bucket.role_arn}),
    })


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def bucket_verify(request, bucket_uuid):
    bucket = get_owned_or_404(request.access, Bucket, uuid=bucket_uuid)
    bucket = services.bucket_verify(bucket=bucket, actor=request.user, request=request)
    if bucket.status == "verified":
        messages.success(request, f"{bucket.name} is verified.")
    else:
        messages.error(request, f"{bucket.name} failed verification: see the checks below.")
    return redirect("buckets:detail", tenant_slug=request.access.tenant.slug, bucket_uuid=bucket.uuid)


@sensitive_post_parameters("secret_access_key")
@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def bucket_credentials(request, bucket_uuid):
    bucket = get_owned_or_404(request.access, Bucket, uuid=bucket_uuid)
    form = CredentialsForm(request.POST)
    if form.is_valid():
        services.bucket_set_credentials(bucket=bucket, actor=request.user, request=request, **form.cleaned_data)
        bucket = services.bucket_verify(bucket=bucket, actor=request.user, request=request)
        messages.success(request, "The credentials were replaced and the bucket verified again.")
    else:
        messages.error(request, "Enter both the access key id and the secret access key.")
    return redirect("buckets:detail", tenant_slug=request.access.tenant.slug, bucket_uuid=bucket.uuid)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def bucket_role(request, bucket_uuid):
    bucket = get_owned_or_404(request.access, Bucket, uuid=bucket_uuid)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter the role ARN.")
        return redirect("buckets:detail", tenant_slug=request.access.tenant.slug, bucket_uuid=bucket.uuid)
    try:
        services.bucket_set_role(bucket=bucket, actor=request.user, role_arn=form.cleaned_data["role_arn"],
                                 request=request)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("buckets:detail", tenant_slug=request.access.tenant.slug, bucket_uuid=bucket.uuid)
    bucket = services.bucket_verify(bucket=bucket, actor=request.user, request=request)
    if bucket.status == "verified":
        messages.success(request, f"{bucket.name} now uses the role {bucket.role_arn} and is verified.")
    else:
        messages.error(request, f"{bucket.name} now uses the role {bucket.role_arn} but failed verification: "
                                "see the checks below.")
    return redirect("buckets:detail", tenant_slug=request.access.tenant.slug, bucket_uuid=bucket.uuid)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def bucket_remove(request, bucket_uuid):
    bucket = get_owned_or_404(request.access, Bucket, uuid=bucket_uuid)
    try:
        services.bucket_remove(bucket=bucket, actor=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("buckets:detail", tenant_slug=request.access.tenant.slug, bucket_uuid=bucket.uuid)
    messages.success(request, f"{bucket.name} was removed from the portal (its objects stay in S3).")
    return redirect("buckets:list", tenant_slug=request.access.tenant.slug)
